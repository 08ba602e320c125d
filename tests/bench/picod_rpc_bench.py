"""picod benchmarks: SDK round trip of commands.run("true"), idle RSS, start-to-serving.

Run: .venv/bin/python tests/bench/picod_rpc_bench.py [--runs 300]
Targets (issue): p50 <= 5 ms, idle RSS <= 40 MiB, start-to-serving <= 300 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PICOD = str(Path(sys.executable).with_name("agentcube-e2b"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def health_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False


def start(port: int, home: str) -> tuple[subprocess.Popen[bytes], float]:
    began = time.perf_counter()
    proc = subprocess.Popen(
        [PICOD, "picod", "--listen", f"127.0.0.1:{port}", "--no-auth", "--home", home],
        start_new_session=True,
    )
    while not health_ok(port):
        if proc.poll() is not None:
            raise SystemExit(f"picod exited with {proc.returncode}")
        time.sleep(0.002)
    return proc, time.perf_counter() - began


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--starts", type=int, default=7)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="picod-bench-")

    starts = []
    for _ in range(args.starts):
        proc, took = start(free_port(), home)
        starts.append(took)
        stop(proc)
    print(
        f"start-to-serving: median {statistics.median(starts) * 1000:.0f} ms, "
        f"min {min(starts) * 1000:.0f} ms, max {max(starts) * 1000:.0f} ms "
        f"(n={len(starts)}, target <= 300 ms)"
    )

    port = free_port()
    proc, _ = start(port, home)
    try:
        print(f"idle RSS after start: {rss_mib(proc.pid):.1f} MiB")
        from e2b import ConnectionConfig, Sandbox
        from packaging.version import Version

        sandbox = Sandbox(
            sandbox_id="bench",
            sandbox_domain=None,
            envd_version=Version("0.6.4"),
            envd_access_token=None,
            traffic_access_token=None,
            connection_config=ConnectionConfig(sandbox_url=f"http://127.0.0.1:{port}"),
        )
        for _ in range(20):
            sandbox.commands.run("true")
        times = []
        for _ in range(args.runs):
            began = time.perf_counter()
            sandbox.commands.run("true")
            times.append((time.perf_counter() - began) * 1000)
        print(
            f'commands.run("true") round trip: p50 {pct(times, 0.5):.2f} ms, '
            f"p90 {pct(times, 0.9):.2f} ms, p99 {pct(times, 0.99):.2f} ms "
            f"(n={args.runs}, target p50 <= 5 ms)"
        )
        print(f"RSS after {args.runs + 20} commands: {rss_mib(proc.pid):.1f} MiB (target <= 40)")
        spawn = []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        for _ in range(50):
            began = time.perf_counter()
            subprocess.run(["/bin/bash", "-l", "-c", "true"], env=env, check=True)
            spawn.append((time.perf_counter() - began) * 1000)
        print(
            f"for scale, `bash -l -c true` spawned directly: p50 {pct(spawn, 0.5):.2f} ms "
            "(the SDK always runs commands through bash -l)"
        )
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
