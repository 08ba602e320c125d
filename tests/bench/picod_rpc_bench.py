"""picod benchmarks: start-to-serving, idle RSS, and the SDK's commands.run("true").

Run: .venv/bin/python tests/bench/picod_rpc_bench.py [--runs 300] [--starts 7]
Targets (issue): start-to-serving <= 300 ms, idle RSS <= 40 MiB, p50 <= 5 ms on loopback.

Wall-clock figures swing with the machine's load (printed first), so each one comes with a
CPU-time figure that does not: picod's own CPU (user + system, summed over its threads from
/proc/<pid>/task/*/schedstat, in ns) until /health first answers, and per command. The
per-command CPU excludes the `bash -l -c true` child (a separate process), whose own cost
is shown by spawning it directly, so a reader can see picod's share of the round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import free_port, pct, status_mib

PICOD = str(Path(sys.executable).with_name("agentcube-e2b"))


def health_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False


def cpu_ms(pid: int) -> float:
    """CPU time of every thread of `pid` so far, in ms (schedstat: ns on the CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # thread ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e6


def start(command: list[str], port: int, home: str) -> tuple[subprocess.Popen[bytes], float, float]:
    """(process, wall ms, picod CPU ms) from exec until /health answers 204."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "picod", "--listen", f"127.0.0.1:{port}", "--no-auth", "--home", home],
        start_new_session=True,
    )
    while not health_ok(port):
        if proc.poll() is not None:
            raise SystemExit(f"picod exited with {proc.returncode}")
        time.sleep(0.002)
    return proc, (time.perf_counter() - began) * 1000, cpu_ms(proc.pid)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f}, min {min(values):.0f}, max {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument(
        "--command",
        default=PICOD,
        help="the agentcube-e2b command to start picod with (e.g. another checkout's)",
    )
    args = parser.parse_args()
    command = args.command.split()
    home = tempfile.mkdtemp(prefix="picod-bench-")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs (wall-clock figures depend on it)")

    walls, cpus = [], []
    for _ in range(args.starts):
        proc, wall, cpu = start(command, free_port(), home)
        walls.append(wall)
        cpus.append(cpu)
        stop(proc)
    print(f"start-to-serving wall ms: {spread(walls)} (n={len(walls)}, target <= 300)")
    print(f"start-to-serving picod CPU ms: {spread(cpus)}")

    port = free_port()
    proc, _, _ = start(command, port, home)
    try:
        time.sleep(0.5)  # let start-up settle before reading the idle figures
        print(
            f"idle RSS: {status_mib(proc.pid, 'VmRSS'):.1f} MiB "
            f"(peak {status_mib(proc.pid, 'VmHWM'):.1f} MiB, target <= 40)"
        )
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
        picod_before = cpu_ms(proc.pid)
        client_before = time.process_time()
        for _ in range(args.runs):
            began = time.perf_counter()
            sandbox.commands.run("true")
            times.append((time.perf_counter() - began) * 1000)
        picod_us = (cpu_ms(proc.pid) - picod_before) * 1000 / args.runs
        client_us = (time.process_time() - client_before) * 1e6 / args.runs
        print(
            f'commands.run("true") SDK round trip wall ms: p50 {pct(times, 0.5):.2f}, '
            f"p90 {pct(times, 0.9):.2f}, p99 {pct(times, 0.99):.2f} "
            f"(n={args.runs}, target p50 <= 5)"
        )
        print(
            f"  CPU per command: picod {picod_us:.0f} us (without its bash child), "
            f"SDK client {client_us:.0f} us"
        )
        print(
            f"RSS after {args.runs + 20} commands: {status_mib(proc.pid, 'VmRSS'):.1f} MiB "
            f"(peak {status_mib(proc.pid, 'VmHWM'):.1f} MiB)"
        )
        spawn = []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(50):
            began = time.perf_counter()
            subprocess.run(["/bin/bash", "-l", "-c", "true"], env=env, check=True)
            spawn.append((time.perf_counter() - began) * 1000)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        bash_cpu_us = (
            (
                (children.ru_utime - children_before.ru_utime)
                + (children.ru_stime - children_before.ru_stime)
            )
            * 1e6
            / 50
        )
        print(
            f"baseline `bash -l -c true` spawned directly: wall p50 {pct(spawn, 0.5):.2f} ms, "
            f"CPU {bash_cpu_us:.0f} us (the SDK always runs commands through bash -l)"
        )
        print(
            f"  picod's share of the p50: ~{pct(times, 0.5) - pct(spawn, 0.5):.2f} ms wall "
            "(SDK client and transport included)"
        )
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
