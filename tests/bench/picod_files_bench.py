"""Benchmark picod's `/files`: 256 MiB up and down, MiB/s each way, and picod's peak RSS.

Run: .venv/bin/python tests/bench/picod_files_bench.py [--mib 256] [--client httpx|curl]

Starts its own picod (no auth) on a free port with a temporary home, streams a file of
random bytes up as octet-stream and as multipart, then down (identity and gzip), and reads
picod's VmHWM from /proc. Targets: >= 300 MiB/s each way, peak RSS < 100 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _measure import NotHealthy, free_port, status_mib, wait_healthy

CHUNK = 1024 * 1024
PICOD = str(Path(sys.executable).with_name("agentcube-e2b"))


def start_picod(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [PICOD, "picod", "--listen", f"127.0.0.1:{port}", "--no-auth", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, f"{url}/health", 204, timeout_s=60, interval_s=0.05)
    except NotHealthy as e:
        proc.kill()
        raise SystemExit(f"picod {e}") from None
    return proc, url


def curl(*args: str) -> None:
    """curl writing the response body nowhere; fails on an HTTP error."""
    subprocess.run(["curl", "-sf", "-o", "/dev/null", *args], check=True)


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(label: str, size: int, pid: int, fn) -> None:  # type: ignore[no-untyped-def]
    """Wall-clock MiB/s, and MiB per picod CPU-second (steadier on a busy machine)."""
    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    used = max(cpu_seconds(pid) - cpu, 0.01)
    mib = size / CHUNK
    print(
        f"{label:<30} {mib / seconds:8.1f} MiB/s  ({seconds:.2f} s; picod {used:.2f} CPU-s,"
        f" {mib / used:.0f} MiB per CPU-s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--client", choices=["httpx", "curl"], default="httpx")
    args = parser.parse_args()
    if args.client == "curl" and shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    work = Path(tempfile.mkdtemp(prefix="picod-bench-"))
    try:
        run(work, args.mib, args.client)
    finally:
        shutil.rmtree(work)


def run(work: Path, mib: int, client_kind: str) -> None:
    source = work / "source.bin"
    with source.open("wb") as f:
        block = os.urandom(CHUNK)
        for _ in range(mib):
            f.write(block)
    size = source.stat().st_size
    home = work / "home"
    home.mkdir()
    proc, url = start_picod(home)
    files = f"{url}/files"
    client = httpx.Client(timeout=None)
    try:
        print(f"picod pid {proc.pid}, {mib} MiB, client {client_kind}")
        print(f"{'idle picod RSS':<30} {status_mib(proc.pid, 'VmHWM'):8.1f} MiB")

        def up_octet() -> None:
            if client_kind == "curl":
                # -T streams the file (--data-binary would load it into memory first).
                curl(
                    "-X",
                    "POST",
                    "-T",
                    str(source),
                    "-H",
                    "Content-Type: application/octet-stream",
                    f"{files}?path=up-octet.bin",
                )
                return
            r = client.post(
                files,
                params={"path": "up-octet.bin"},
                content=file_chunks(source),
                headers={"content-type": "application/octet-stream"},
            )
            r.raise_for_status()

        def up_multipart() -> None:
            if client_kind == "curl":
                curl("-F", f"file=@{source};filename=up-multi.bin", f"{files}?path=up-multi.bin")
                return
            with source.open("rb") as f:
                r = client.post(
                    files, params={"path": "up-multi.bin"}, files={"file": ("up-multi.bin", f)}
                )
            r.raise_for_status()

        def down(encoding: str) -> None:
            if client_kind == "curl":
                curl("-H", f"Accept-Encoding: {encoding}", f"{files}?path=up-octet.bin")
                return
            total = 0
            with client.stream(
                "GET", files, params={"path": "up-octet.bin"}, headers={"accept-encoding": encoding}
            ) as r:
                r.raise_for_status()
                for chunk in r.iter_raw(CHUNK):
                    total += len(chunk)
            assert encoding != "identity" or total == size

        timed("upload octet-stream", size, proc.pid, up_octet)
        timed("upload multipart", size, proc.pid, up_multipart)
        timed("download identity", size, proc.pid, lambda: down("identity"))
        timed("download gzip (random data)", size, proc.pid, lambda: down("gzip"))
        assert (home / "up-octet.bin").stat().st_size == size
        assert (home / "up-multi.bin").stat().st_size == size
        print(f"{'picod peak RSS (VmHWM)':<30} {status_mib(proc.pid, 'VmHWM'):8.1f} MiB")
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
