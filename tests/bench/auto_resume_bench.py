"""Auto-resume of a SIGSTOP-paused sandbox; print numbers, assert nothing:
.venv/bin/python tests/bench/auto_resume_bench.py [--runs N]

Starts `up` on a free port with a temporary state directory, creates a sandbox with
`lifecycle={"on_timeout": "pause", "auto_resume": True}`, then N times: pause it (the SDK's
`pause()`), and time from sending a request to its first byte through the gateway:
1. `GET /health` with httpx (what `is_running()` sends): response headers;
2. the SDK's `commands.run("echo woke")`: the first stdout chunk (`on_stdout`).
The same two on the running sandbox are the baseline. Target: first byte <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _measure import exported, free_port, pct, start_up


def first_byte_s(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    with client.stream("GET", url, headers=headers) as response:
        elapsed = time.perf_counter() - start
        response.raise_for_status()
    return elapsed


def first_stdout_s(run: Callable[..., object]) -> float:
    start = time.perf_counter()
    seen: list[float] = []

    def on_stdout(_: object) -> None:
        if not seen:
            seen.append(time.perf_counter() - start)

    run("echo woke", on_stdout=on_stdout)
    return seen[0]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: p50 {pct(values, 0.5) * 1e3:.0f} ms, p90 {pct(values, 0.9) * 1e3:.0f} ms, "
        f"max {max(values) * 1e3:.0f} ms (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, printed = start_up(Path(tmp) / "state", Path(tmp) / "up.log", listen=free_port())
        env = exported(printed)
        os.environ.update(env)
        from e2b import Sandbox

        try:
            lifecycle = {"on_timeout": "pause", "auto_resume": True}
            sbx = Sandbox.create(timeout=900, lifecycle=lifecycle)  # type: ignore[arg-type]
            url = f"{env['E2B_SANDBOX_URL']}/health"
            headers = {"e2b-sandbox-id": sbx.sandbox_id, "e2b-sandbox-port": "49983"}
            health_running, health_resumed, run_running, run_resumed = [], [], [], []
            with httpx.Client(timeout=30) as client:
                first_byte_s(client, url, headers)  # warm-up
                for _ in range(args.runs):
                    health_running.append(first_byte_s(client, url, headers))
                    run_running.append(first_stdout_s(sbx.commands.run))
                    sbx.pause()
                    health_resumed.append(first_byte_s(client, url, headers))
                    sbx.pause()
                    run_resumed.append(first_stdout_s(sbx.commands.run))
            print(f"load average {os.getloadavg()[0]:.1f}")
            print(summary("GET /health, running", health_running))
            print(summary("GET /health, paused (auto-resume)", health_resumed) + " (target <= 1 s)")
            print(summary("commands.run first stdout, running", run_running))
            print(
                summary("commands.run first stdout, paused (auto-resume)", run_resumed)
                + " (target <= 1 s)"
            )
            sbx.kill()
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
