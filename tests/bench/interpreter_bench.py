"""Code interpreter benchmarks: run_code("1+1") latency straight to the server (warm kernel),
idle memory of the server + its warm kernel (+ a picod, as in a code-interpreter sandbox),
and start-to-first-result.

Run: .venv/bin/python tests/bench/interpreter_bench.py [--runs 300] [--data-stack [--preload]]
Targets (issue): p50 <= 15 ms through the gateway (this measures the server alone);
idle memory <= 120 MiB for a code-interpreter sandbox including picod; with the data stack
preloaded, <= 150 MiB PSS.

--data-stack runs the kernels on the code-interpreter template's data stack (built in
.cache/rootfs by `make rootfs`), as in a sandbox, and also times the first cell that imports
numpy, pandas and matplotlib.pyplot; --preload imports them in the kernel at its start.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _measure import NotHealthy, environ_without, free_port, memory_kib, pct, wait_healthy
from e2b_code_interpreter import Sandbox

from extproc.lifecycle import data_stack

CLI = str(Path(sys.executable).with_name("agentcube-e2b"))


def start(command: str, port: int, *flags: str, ready: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [CLI, command, "--listen", f"127.0.0.1:{port}", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environ_without("AGENTCUBE_E2B_"),
        start_new_session=True,
    )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/health", ready, timeout_s=30, interval_s=0.01)
    except NotHealthy as e:
        proc.kill()
        raise SystemExit(f"{command} {e}") from None
    return proc


def percentiles(samples: list[float]) -> str:
    p50 = statistics.median(samples) * 1000
    p90 = pct(samples, 0.9) * 1000
    p99 = pct(samples, 0.99) * 1000
    return f"p50 {p50:.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--data-stack", action="store_true", help="kernels on the data stack")
    parser.add_argument("--preload", action="store_true", help="and preload it (--data-stack)")
    args = parser.parse_args()
    kernel_flags = ["--preload"] if args.preload else []
    if args.data_stack:
        cache = Path(__file__).resolve().parents[2] / ".cache" / "rootfs"
        stack = data_stack.cached(cache)
        if stack is None:
            raise SystemExit(f"no data stack in {cache}: run make rootfs")
        kernel_flags += data_stack.interpreter_flags(stack, isolated=False)
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
        *kernel_flags,
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
        idle = memory_kib(server.pid)[1] + memory_kib(picod.pid)[1]
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
        if args.data_stack:
            t = time.perf_counter()
            imported = sandbox.run_code("import numpy, pandas, matplotlib.pyplot")
            assert imported.error is None, imported.error
            print(f"first cell importing numpy, pandas, pyplot: {time.perf_counter() - t:.2f} s")
            time.sleep(2)
            used = memory_kib(server.pid)[1] + memory_kib(picod.pid)[1]
            print(f"PSS incl. picod once they are imported: {used / 1024:.1f} MiB "
                  f"(idle before: {idle / 1024:.1f} MiB)")  # fmt: skip
    finally:
        for proc in (server, picod):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
