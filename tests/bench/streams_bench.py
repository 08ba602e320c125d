"""Long command streams; prints numbers, asserts nothing.

.venv/bin/python tests/bench/streams_bench.py [--streams 1000 --sandboxes 10 --seconds 60]

Starts `agentcube-e2b up` on a free port with a temporary state directory, creates
`--sandboxes` sandboxes and runs `--streams` commands at once, spread over them, through the
async E2B SDK. Each command prints one line a second for `--seconds` seconds, so each is a
server stream held open that long; `--ramp` spreads their opening over that many seconds.
Prints the errors, the lines received against the lines expected, how long the streams took
to open, and the RSS growth of the edge and Envoy over the run (issue 10's target: 1000
streams for 60 s, 0 errors, edge RSS growth <= 50 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from _measure import exported, free_port, pct, start_up, status_mib


def _child_pid(up: int, text: str) -> int:
    for task in Path(f"/proc/{up}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if text.encode() in cmdline:
                return int(child)
    raise LookupError(text)


async def _streams(sandboxes: int, streams: int, seconds: int, ramp_s: float) -> None:
    from e2b import AsyncSandbox

    made = await asyncio.gather(
        *(AsyncSandbox.create(timeout=seconds + 300) for _ in range(sandboxes))
    )
    lines = [0] * streams
    first_line: list[float] = []
    errors: list[str] = []
    command = f"for i in $(seq {seconds}); do echo $i; sleep 1; done"
    started = time.monotonic()

    async def one(index: int) -> None:
        sbx = made[index % len(made)]
        await asyncio.sleep(ramp_s * index / streams)

        def seen(_: str) -> None:
            if lines[index] == 0:
                first_line.append(time.monotonic() - started)
            lines[index] += 1

        try:
            result = await sbx.commands.run(command, on_stdout=seen, timeout=seconds + 120)
            if result.exit_code != 0:
                errors.append(f"exit {result.exit_code}")
        except Exception as error:  # counted: the figure is the number of errors
            errors.append(repr(error)[:200])

    try:
        await asyncio.gather(*(one(i) for i in range(streams)))
    finally:
        await asyncio.gather(*(s.kill() for s in made), return_exceptions=True)
    took = time.monotonic() - started
    print(
        f"streams: {streams} over {sandboxes} sandboxes, {seconds} s each, opened over "
        f"{ramp_s:g} s; wall {took:.1f} s"
    )
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"lines: {sum(lines)} of {streams * seconds} expected")
    if first_line:
        print(
            "first line after: "
            f"p50 {pct(first_line, 0.5):.2f} s, p99 {pct(first_line, 0.99):.2f} s, "
            f"max {max(first_line):.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--sandboxes", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="seconds over which the streams open (0: at once)"
    )
    args = parser.parse_args()
    # the SDK's default pool is 200 connections per address
    os.environ.setdefault("E2B_MAX_CONNECTIONS", str(max(200, args.streams)))
    env = {
        **os.environ,
        "AGENTCUBE_E2B_LIFECYCLE_POOL_SIZE": "0",
        "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE": "0",
    }
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        process, printed = start_up(state, Path(tmp) / "up.log", env=env, listen=free_port())
        try:
            os.environ.update(exported(printed))
            edge = _child_pid(process.pid, "extproc.cli edge")
            envoy = _child_pid(process.pid, "envoy -c")
            before = {
                name: status_mib(pid, "VmRSS") for name, pid in (("edge", edge), ("envoy", envoy))
            }
            print(f"load average before: {os.getloadavg()[0]:.1f}")
            asyncio.run(_streams(args.sandboxes, args.streams, args.seconds, args.ramp))
            for name, pid in (("edge", edge), ("envoy", envoy)):
                after = status_mib(pid, "VmRSS")
                print(
                    f"{name} RSS: {before[name]:.1f} -> {after:.1f} MiB "
                    f"(+{after - before[name]:.1f}; peak {status_mib(pid, 'VmHWM'):.1f})"
                )
            print(f"load average after: {os.getloadavg()[0]:.1f}")
        finally:
            process.terminate()
            process.wait(timeout=60)
            if process.stdout is not None:
                process.stdout.close()


if __name__ == "__main__":
    main()
