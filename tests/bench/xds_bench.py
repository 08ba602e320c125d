"""The fast path's xDS at scale; prints numbers, asserts nothing:
.venv/bin/python tests/bench/xds_bench.py [--sandboxes 100 1000 10000] [--samples 5]

For each count: an in-memory lifecycle holding that many running sandboxes, the real edge
(in this process) and the real Envoy (concurrency 2, as `up`). It reports the time from the
edge's start until Envoy serves every sandbox fast (all JWTs signed, routes applied), the size
of the routes pushed, Envoy's time to apply them (send -> ACK) and its RSS, then, one at a
time (`--samples` each):

- create -> landed: a new sandbox appears on the watch stream until Envoy has applied routes
  holding it (until then the Check answers its requests, correctly but slower);
- kill -> off: a sandbox is killed until Envoy has applied the runtime key that switches its
  fast route off (what a platform kill waits for before answering);
- kill -> removed: until Envoy has applied routes without it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _measure  # noqa: F401 (puts tests/ on sys.path)
from _measure import memory_kib

from edge.fake_lifecycle import make_sandbox  # type: ignore[import-not-found]
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.identity import load_or_create_router_identity
from extproc.edge.server import Edge
from fast_path.harness import (  # type: ignore[import-not-found]
    edge_settings,
    envoy_settings,
    running_envoy,
    running_lifecycle,
    write_state,
)


def sandbox(index: int) -> pb.Sandbox:
    host = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
    return make_sandbox(f"sbx{index:08d}", "default", endpoint_host=host)


async def until(condition: object, timeout_s: float = 600) -> float:
    """Seconds until `condition()` holds (state of this process, polled every millisecond)."""
    started = time.perf_counter()
    while not condition():  # type: ignore[operator]
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


def envoy_rss_mib(state: Path) -> float:
    """Envoy's RSS (the only envoy whose command line names this state directory)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"envoy") and str(state).encode() in b" ".join(argv):
            return memory_kib(int(proc.name))[0] / 1024
    return float("nan")


async def measure(count: int, samples: int, tmp: Path) -> None:
    identity = tmp / "identity"
    load_or_create_router_identity(identity)
    state = tmp / f"gw-{count}"
    write_state(state, identity)
    envoy = envoy_settings(state, fast=True)
    async with running_lifecycle([sandbox(index) for index in range(count)]) as (fake, target):
        started = time.perf_counter()
        edge = Edge(edge_settings(state, target, fast=True))
        await edge.start()
        try:
            async with running_envoy(envoy, state):
                xds = edge.xds
                assert xds is not None
                ids = [f"sbx{index:08d}" for index in range(count)]
                while not all(xds.serving(sandbox_id) for sandbox_id in ids):
                    await asyncio.sleep(0.05)
                all_fast = time.perf_counter() - started
                rds = edge.metrics.xds_bytes.labels("rds")._value.get()
                applied = edge.metrics.xds_apply_seconds.labels("rds")
                pushes = edge.metrics.xds_pushes.labels("rds")._value.get()
                print(
                    f"{count} sandboxes: all fast {all_fast:.1f} s after the edge started "
                    f"({pushes:.0f} route pushes while JWTs were signed); routes "
                    f"{rds / 1e6:.2f} MB; Envoy RSS {envoy_rss_mib(state):.0f} MiB",
                    flush=True,
                )
                sum_before, pushes_before = applied._sum.get(), pushes
                creates, offs, removals = [], [], []
                for index in range(count, count + samples):
                    created = sandbox(index)
                    fake.sandboxes[created.sandbox_id] = created
                    before = time.perf_counter()
                    await fake.publish(pb.SANDBOX_EVENT_TYPE_CREATED, created)
                    await until(lambda sid=created.sandbox_id: xds.serving(sid))
                    creates.append(time.perf_counter() - before)
                    await asyncio.sleep(0.2)
                for index in range(samples):
                    killed = fake.sandboxes.pop(f"sbx{index:08d}")
                    before = time.perf_counter()
                    await fake.publish(pb.SANDBOX_EVENT_TYPE_KILLED, killed)
                    await until(lambda sid=killed.sandbox_id: edge.directory.get(sid) is None)
                    assert await xds.landed(killed.sandbox_id, 60)
                    offs.append(time.perf_counter() - before)
                    await until(lambda sid=killed.sandbox_id: sid not in xds.gated)
                    removals.append(time.perf_counter() - before)
                    await asyncio.sleep(0.2)
                pushed = edge.metrics.xds_pushes.labels("rds")._value.get() - pushes_before
                apply_ms = (applied._sum.get() - sum_before) / max(pushed, 1) * 1000
                print(f"  a full route push: Envoy applies it in {apply_ms:.0f} ms (mean)")
                print(
                    f"  create -> landed p50 {statistics.median(creates) * 1000:.0f} ms "
                    f"(max {max(creates) * 1000:.0f}); kill -> off p50 "
                    f"{statistics.median(offs) * 1000:.1f} ms (max {max(offs) * 1000:.1f}); "
                    f"kill -> removed p50 {statistics.median(removals) * 1000:.0f} ms",
                    flush=True,
                )
        finally:
            await edge.stop(0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    for count in args.sandboxes:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            await measure(count, args.samples, Path(tmp))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
