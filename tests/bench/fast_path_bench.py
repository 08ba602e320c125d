"""The data plane with the fast path; prints numbers, asserts nothing:
.venv/bin/python tests/bench/fast_path_bench.py [--requests 20000] [--rounds 1] [--checked]

Starts `agentcube-e2b up` (fast path on, its default) on a temporary state directory, creates
one sandbox, and compares the gateway with a bare Envoy (the gateway's own bootstrap plus a
route straight to the same picod, ext_authz and ext_proc off; gateway_bench.py builds it):

1. small sandbox requests (picod GET /health with X-Access-Token), header-routed as the SDK
   sends them with E2B_SANDBOX_URL, over HTTP/1.1 (h2load --h1, 16 connections) and h2
   (8 connections x 16 streams): gateway / bare Envoy (target >= 0.8 each);
2. a 256 MiB `/files` download: gateway / straight to picod (target >= 0.95);
3. SDK `commands.run("true")` p50, gateway vs straight to picod (target: gateway <= direct +
   0.5 ms); each side runs in a child process, the direct one inside the sandboxes' hub
   network namespace with the JWT the edge would send.

`--checked` repeats everything with `up --no-fast-path` for comparison. Envoy, the edge,
picod and the load generators share this machine's cores: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _measure import envoy_argv, exported, free_port, start_up
from gateway_bench import (
    baseline_config,
    download_mib_s,
    picod_address,
    picod_jwt,
    wait_admin_ready,
)

from extproc.envoy_config.settings import EnvoySettings, HostPort, UnixSocket
from extproc.lifecycle.networking import enter_netns, hub_netns_path

SIZE = 256 << 20


def h2load(url: str, headers: dict[str, str], requests: int, *, h1: bool) -> float:
    shape = ["--h1", "-c", "16", "-m", "1"] if h1 else ["-c", "8", "-m", "16"]
    argv = ["h2load", "-n", str(requests), *shape, url]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    if rate is None or status is None or int(status.group(1)) != requests:
        raise SystemExit(f"h2load did not succeed:\n{out}")
    return float(rate.group(1))


def commands_p50(sandbox: dict[str, str], runs: int) -> tuple[float, float]:
    """(p50, p90) ms of `commands.run("true")` in a child process (see `_child`)."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps({**sandbox, "runs": runs})],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(f"commands.run child failed:\n{child.stderr[-3000:]}")
    p50, p90 = (float(value) for value in child.stdout.split())
    return p50, p90


def _child(spec: dict[str, str | int]) -> None:
    """Run `commands.run("true")` against one sandbox at `url`; print p50 and p90 in ms."""
    if spec.get("hub"):
        enter_netns(Path(str(spec["hub"])))  # before any thread or socket exists
    from e2b import ConnectionConfig, Sandbox
    from packaging.version import Version

    # what Sandbox.create/connect put in the config (and, straight to picod, the edge's JWT)
    headers = {
        "E2b-Sandbox-Id": str(spec["id"]),
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": str(spec["token"]),
    }
    if spec.get("jwt"):
        headers["Authorization"] = str(spec["jwt"])
    config = ConnectionConfig(
        api_key="e2b_" + "0" * 40, sandbox_url=str(spec["url"]), extra_sandbox_headers=headers
    )
    sandbox = Sandbox(
        sandbox_id=str(spec["id"]),
        envd_version=Version("0.6.13"),
        envd_access_token=str(spec["token"]),
        sandbox_domain=None,
        connection_config=config,
        traffic_access_token=None,
    )
    for _ in range(10):
        sandbox.commands.run("true")
    times = []
    for _ in range(int(spec["runs"])):
        start = time.perf_counter()
        sandbox.commands.run("true")
        times.append((time.perf_counter() - start) * 1000)
    print(f"{statistics.median(times):.3f} {statistics.quantiles(times, n=10)[-1]:.3f}")


def measure(fast: bool, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        state = Path(tmp) / "state"
        env = dict(os.environ, AGENTCUBE_E2B_UP_FAST_PATH="on" if fast else "off")
        process, printed = start_up(state, Path(tmp) / "up.log", env=env, listen=free_port())
        values = exported(printed)
        os.environ.update(values)
        from e2b import Sandbox

        baseline = None
        try:
            sbx = Sandbox.create(timeout=900)
            token = sbx._envd_access_token or ""
            domain = values["E2B_DOMAIN"]
            picod = asyncio.run(picod_address(state, sbx.sandbox_id))
            hub = hub_netns_path(state / "lifecycle")
            settings = EnvoySettings(
                listen=HostPort("127.0.0.1", free_port()),
                admin=UnixSocket(Path(tmp) / "baseline-admin.sock"),
                domain=domain,
                edges=tuple(
                    UnixSocket(path) for path in sorted((state / "run").glob("edge*.sock"))
                ),
                sandbox_netns=hub,
            )
            config = Path(tmp) / "baseline.yaml"
            config.write_text(baseline_config(settings, picod, domain))
            baseline = subprocess.Popen(
                envoy_argv(config, concurrency=2, log_level="error"), stdout=subprocess.DEVNULL
            )
            asyncio.run(wait_admin_ready(settings))
            gateway = values["E2B_API_URL"]
            routed = {
                "e2b-sandbox-id": sbx.sandbox_id,
                "e2b-sandbox-port": "49983",
                "x-access-token": token,
            }
            bare = {":authority": f"baseline.{domain}", "x-access-token": token}
            time.sleep(1)  # let the sandbox's fast route land (it does in milliseconds)
            label = "fast path" if fast else "checked"
            sbx.commands.run(f"head -c {SIZE} /dev/zero > big.bin", timeout=120)
            jwt = picod_jwt(state / "identity" / "private.pem", sbx.sandbox_id)
            in_hub = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(hub,))
            for _ in range(args.rounds):
                print(f"[{label}] load average {os.getloadavg()[0]:.2f}", flush=True)
                for h1 in (True, False):
                    h2load(f"{gateway}/health", routed, 2000, h1=h1)  # warm-up
                    h2load(f"http://{settings.listen}/health", bare, 2000, h1=h1)
                    through = h2load(f"{gateway}/health", routed, args.requests, h1=h1)
                    direct = h2load(f"http://{settings.listen}/health", bare, args.requests, h1=h1)
                    print(
                        f"[{label}] small requests over {'HTTP/1.1' if h1 else 'h2'}: gateway "
                        f"{through:,.0f} req/s, bare Envoy {direct:,.0f} req/s, ratio "
                        f"{through / direct:.2f} (target >= 0.8)",
                        flush=True,
                    )
                via = download_mib_s(f"{gateway}/files?path=big.bin", routed)
                straight = in_hub.submit(
                    download_mib_s,
                    f"http://{picod}/files?path=big.bin",
                    {"x-access-token": token, "authorization": jwt},
                ).result()
                print(
                    f"[{label}] 256 MiB download: gateway {via:,.0f} MiB/s, straight to picod "
                    f"{straight:,.0f} MiB/s, ratio {via / straight:.2f} (target >= 0.95)",
                    flush=True,
                )
            sandbox = {"id": sbx.sandbox_id, "token": token}
            through50, through90 = commands_p50({**sandbox, "url": gateway}, args.runs)
            direct50, direct90 = commands_p50(
                {**sandbox, "url": f"http://{picod}", "hub": str(hub), "jwt": jwt}, args.runs
            )
            print(
                f"[{label}] commands.run('true'): gateway p50 {through50:.2f} ms (p90 "
                f"{through90:.2f}), direct p50 {direct50:.2f} ms (p90 {direct90:.2f}), "
                f"+{through50 - direct50:.2f} ms (target <= +0.5 ms)",
                flush=True,
            )
            sbx.kill()
        finally:
            if baseline is not None:
                baseline.terminate()
                baseline.wait()
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200, help="commands.run per side")
    parser.add_argument("--checked", action="store_true", help="also `up --no-fast-path`")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    measure(True, args)
    if args.checked:
        measure(False, args)


if __name__ == "__main__":
    main()
