"""Signed URLs that name no sandbox; print numbers, assert nothing:
.venv/bin/python tests/bench/signed_url_bench.py [--rounds N] [--requests N]

1. In process, the edge's SignatureRouter (extproc/edge/signed_routing.py) over a directory of
   10 000 sandboxes: the first request for a signature (a full scan) and the next ones (cache).
2. Through `up` (started on a free port with a temporary state directory): small downloads
   (4 KiB) with the SDK's `download_url()` (`E2B_SANDBOX_URL/files?path=&signature=`, no
   header) vs the same file header-routed as the SDK's own `files.read` sends it
   (E2b-Sandbox-Id/-Port + X-Access-Token), with h2load; target ratio >= 0.9.
3. The same for a 64 MiB download, in MiB/s with httpx.
Rounds alternate the two sides; Envoy, the edge, picod and the load generator share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _measure import exported, free_port, pct, start_up

from extproc.core import signed_urls
from extproc.edge.sandbox_directory import Directory
from extproc.edge.signed_routing import SignatureRouter
from support.routes import running_route

SMALL = 4096
BIG_MIB = 64


def router_costs(sandboxes: int, lookups: int) -> tuple[list[float], list[float]]:
    """(first-lookup seconds, cached-lookup seconds) over `lookups` signatures."""
    directory = Directory()
    for n in range(sandboxes):
        directory.put(running_route(f"sbx{n:05d}", f"{n:064x}"))
    router = SignatureRouter(directory, budget_per_s=sys.float_info.max)  # no budget
    expiration = int(time.time()) + 3600

    def params(n: int) -> dict[str, str]:
        token = f"{(n * 7919) % sandboxes:064x}"
        path = f"/home/user/report-{n}.txt"
        return {
            "path": path,
            "signature": signed_urls.sign(path, "read", "", token, expiration),
            "signature_expiration": str(expiration),
        }

    async def measure() -> tuple[list[float], list[float]]:
        first, cached = [], []
        for n in range(lookups):
            query = params(n)
            start = time.perf_counter()
            assert await router.find(query, "read") is not None
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert await router.find(query, "read") is not None
            cached.append(time.perf_counter() - start)
        return first, cached

    return asyncio.run(measure())


def h2load(url: str, headers: dict[str, str], requests: int) -> float:
    argv = ["h2load", "-n", str(requests), "-c", "8", "-m", "16"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    if match is None or status is None or int(status.group(1)) != requests:
        raise SystemExit(f"h2load did not succeed:\n{out}")
    return float(match.group(1))


def download_mib_s(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    size = 0
    with client.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            size += len(chunk)
    return size / (1 << 20) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--sandboxes", type=int, default=10000, help="for part 1")
    args = parser.parse_args()

    first, cached = router_costs(args.sandboxes, 200)
    print(
        f"1. SignatureRouter over {args.sandboxes:,} sandboxes: first lookup (full scan) "
        f"p50 {pct(first, 0.5) * 1e3:.1f} ms, p99 {pct(first, 0.99) * 1e3:.1f} ms; "
        f"cached p50 {pct(cached, 0.5) * 1e6:.2f} µs, p99 {pct(cached, 0.99) * 1e6:.2f} µs",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        process, printed = start_up(Path(tmp) / "state", Path(tmp) / "up.log", listen=free_port())
        env = exported(printed)
        os.environ.update(env)
        from e2b import Sandbox

        try:
            sbx = Sandbox.create(timeout=900)
            sbx.files.write("small.bin", b"x" * SMALL)
            sbx.commands.run(f"head -c {BIG_MIB << 20} /dev/zero > big.bin", timeout=120)
            base = env["E2B_SANDBOX_URL"]
            routed = {
                "e2b-sandbox-id": sbx.sandbox_id,
                "e2b-sandbox-port": "49983",
                "x-access-token": sbx._envd_access_token or "",
            }
            signed_small = sbx.download_url("small.bin", use_signature_expiration=3600)
            routed_small = f"{base}/files?path=small.bin"
            signed_big = sbx.download_url("big.bin", use_signature_expiration=3600)
            routed_big = f"{base}/files?path=big.bin"
            h2load(signed_small, {}, 1000)  # warm-up (and the signature's one scan)
            h2load(routed_small, routed, 1000)
            small_ratios, big_ratios = [], []
            with httpx.Client(timeout=120) as client:
                for round_ in range(1, args.rounds + 1):
                    load = os.getloadavg()[0]
                    signed = h2load(signed_small, {}, args.requests)
                    header = h2load(routed_small, routed, args.requests)
                    small_ratios.append(signed / header)
                    big_signed = download_mib_s(client, signed_big, {})
                    big_header = download_mib_s(client, routed_big, routed)
                    big_ratios.append(big_signed / big_header)
                    print(
                        f"round {round_} (load {load:.1f}): {SMALL // 1024} KiB signed "
                        f"{signed:,.0f} req/s, header-routed {header:,.0f} req/s, ratio "
                        f"{signed / header:.2f}; {BIG_MIB} MiB signed {big_signed:,.0f} MiB/s, "
                        f"header-routed {big_header:,.0f} MiB/s, ratio "
                        f"{big_signed / big_header:.2f}",
                        flush=True,
                    )
            print(
                f"2. small downloads, signed / header-routed: median ratio "
                f"{statistics.median(small_ratios):.2f} (target >= 0.9)\n"
                f"3. {BIG_MIB} MiB downloads, signed / header-routed: median ratio "
                f"{statistics.median(big_ratios):.2f} (target >= 0.9)",
                flush=True,
            )
            sbx.kill()
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
