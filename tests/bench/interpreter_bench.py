"""Code interpreter benchmarks: run_code("1+1") latency straight to the server (warm kernel),
idle memory of the server + its warm kernel (+ a picod, as in a code-interpreter sandbox),
and start-to-first-result.

Run: .venv/bin/python tests/bench/interpreter_bench.py [--runs 300]
Targets (issue): p50 <= 15 ms through the gateway (this measures the server alone);
idle memory <= 120 MiB for a code-interpreter sandbox including picod.
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

import httpx
from e2b_code_interpreter import Sandbox

CLI = str(Path(sys.executable).with_name("agentcube-e2b"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(command: str, port: int, *flags: str, ready: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCUBE_E2B_")}
    proc = subprocess.Popen(
        [CLI, command, "--listen", f"127.0.0.1:{port}", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == ready:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    raise SystemExit(f"{command} did not start")


def tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids += tree(int(child))
    return pids


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process and its descendants, KiB. PSS splits shared pages fairly."""
    rss = pss = 0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p90 = ordered[int(len(ordered) * 0.9)] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="interp-bench-")
    envd_port, port = free_port(), free_port()
    picod = start("picod", envd_port, "--no-auth", "--home", home, ready=204)
    began = time.perf_counter()
    server = start(
        "interpreter",
        port,
        "--no-auth",
        "--cwd",
        home,
        "--envd-url",
        f"http://127.0.0.1:{envd_port}",
        ready=200,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=60) as client:
            first = client.post(f"{url}/execute", json={"code": "1+1"})
            assert '"text": "2"' in first.text, first.text
            boot = time.perf_counter() - began
            print(f"start to first 1+1 result (incl. kernel boot): {boot:.2f} s")
            samples = []
            for _ in range(args.runs):
                t = time.perf_counter()
                response = client.post(f"{url}/execute", json={"code": "1+1"})
                assert response.text.endswith('{"type": "end_of_execution"}\n')
                samples.append(time.perf_counter() - t)
            print(f"raw httpx keep-alive /execute 1+1 x{args.runs}: {percentiles(samples)}")
        sandbox = Sandbox.create(debug=True, sandbox_url=url)
        samples = []
        for _ in range(args.runs):
            t = time.perf_counter()
            assert sandbox.run_code("1+1").text == "2"
            samples.append(time.perf_counter() - t)
        print(f"SDK run_code('1+1') x{args.runs}: {percentiles(samples)}")
        time.sleep(2)  # let the server and kernel settle before measuring "idle"
        server_rss, server_pss = memory_kib(server.pid)
        picod_rss, picod_pss = memory_kib(picod.pid)
        print(
            f"idle memory, interpreter + warm kernel: RSS {server_rss / 1024:.1f} MiB, "
            f"PSS {server_pss / 1024:.1f} MiB"
        )
        print(
            f"idle memory incl. picod: RSS {(server_rss + picod_rss) / 1024:.1f} MiB, "
            f"PSS {(server_pss + picod_pss) / 1024:.1f} MiB"
        )
    finally:
        for proc in (server, picod):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
