"""What the metrics sampler costs: CPU per sweep and per sandbox of one sample.

Starts N local sandboxes (isolated by default, so cgroup memory and the layer's statvfs are
read; `--isolation none` reads RSS from /proc and walks each home), then times sweeps of the
meter's reader over them on this thread (as the meter's worker thread does), and one walk of
a home of `--walk-files` files, the cost a sweep without isolation would pay every time
without the 30 s reuse.

Run: .venv/bin/python tests/bench/metrics_sampler_bench.py [--sandboxes 20] [--sweeps 20]
     [--isolation namespaces|none] [--walk-files 100000]
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from _measure import pct

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.metric_history import MetricHistory
from extproc.lifecycle.readings import Reader, walk_size
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings


def _processes() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())  # noqa: PTH208


def _time_sweeps(backend: LocalBackend, sweeps: int) -> None:
    targets = backend._running_targets()
    reader = Reader()
    reader.read(targets, time.time())  # the first: CPU baselines, and the walks without isolation
    cpu_ms, wall_ms = [], []
    for _ in range(sweeps):
        cpu, wall = time.thread_time(), time.perf_counter()
        samples = reader.read(targets, time.time())
        cpu_ms.append((time.thread_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
        assert len(samples) == len(targets), "a sandbox could not be read"
    per_sandbox_us = [ms * 1000 / len(targets) for ms in cpu_ms]
    print(f"sandboxes {len(targets)}, host processes {_processes()}, sweeps {sweeps}")
    print(f"sweep CPU ms: median {statistics.median(cpu_ms):.2f} p90 {pct(cpu_ms, 0.9):.2f}; "
          f"wall ms: median {statistics.median(wall_ms):.2f}")  # fmt: skip
    print(f"CPU per sample per sandbox us: median {statistics.median(per_sandbox_us):.0f} "
          f"p90 {pct(per_sandbox_us, 0.9):.0f}")  # fmt: skip
    share = statistics.median(cpu_ms) / 5000 * 100
    print(f"at one sweep every 5 s: {share:.3f} % of one core")
    # What a sweep costs the event loop itself: building the targets, storing the samples.
    history = MetricHistory(720)
    started = time.thread_time()
    for _ in range(sweeps):
        for sandbox_id, metric in zip(
            (t.sandbox.sandbox_id for t in backend._running_targets()),
            samples.values(),
            strict=True,
        ):
            history.open(sandbox_id)
            history.append(sandbox_id, metric)
    loop_us = (time.thread_time() - started) * 1e6 / sweeps / len(targets)
    print(f"on the event loop per sample per sandbox us: {loop_us:.1f}")


def _time_walk(files: int) -> None:
    with tempfile.TemporaryDirectory(prefix="metrics-walk-") as home:
        for n in range(files):
            directory = Path(home) / f"d{n // 1000}"
            directory.mkdir(exist_ok=True)
            (directory / f"f{n}").write_bytes(b"x")
        cpu, wall = time.thread_time(), time.perf_counter()
        walk_size(Path(home))
        print(f"one walk of a home of {files} files: CPU {(time.thread_time() - cpu) * 1000:.0f} "
              f"ms, wall {(time.perf_counter() - wall) * 1000:.0f} ms")  # fmt: skip


async def bench(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    settings = LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0"),
        local=LocalSettings(
            state_dir=state, pool_size=0, interpreter_pool_size=0, kill_on_exit=True,
            isolation=args.isolation, max_sandboxes=args.sandboxes + 8,
            rootfs_cache_dir=Path(args.rootfs_cache_dir) if args.rootfs_cache_dir else None,
        ),
    )  # fmt: skip
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.SandboxServiceStub(channel)
        for _ in range(args.sandboxes):
            await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="bench"))
        backend = running.backend
        assert isinstance(backend, LocalBackend)
        cgroups = f", cgroups {backend.isolation.cgroups.mode}" if backend.isolation else ""
        print(f"isolation {args.isolation}{cgroups}")
        _time_sweeps(backend, args.sweeps)
    if args.walk_files:
        _time_walk(args.walk_files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=20)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--isolation", choices=("namespaces", "none"), default="namespaces")
    parser.add_argument("--walk-files", type=int, default=100_000)
    parser.add_argument("--rootfs-cache-dir", default=os.environ.get(
        "AGENTCUBE_E2B_ROOTFS_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache"
                                              / "rootfs")))  # fmt: skip
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
