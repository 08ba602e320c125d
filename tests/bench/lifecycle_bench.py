"""Lifecycle benchmarks: Create latency (warm pool and cold), sustained creates/s with the
pool refilling, memory per idle sandbox, and 200 concurrent sandboxes.

Run: .venv/bin/python tests/bench/lifecycle_bench.py [--sandboxes 200] [--pool 8]
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from _measure import memory_kib, pct

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings


async def bench(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    settings = LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0"),
        local=LocalSettings(
            state_dir=state,
            pool_size=args.pool,
            interpreter_pool_size=0,
            kill_on_exit=True,
            max_sandboxes=args.sandboxes + args.pool + 8,
            rootfs_cache_dir=Path(args.rootfs_cache_dir) if args.rootfs_cache_dir else None,
        ),
    )
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.SandboxServiceStub(channel)
        backend = running.backend

        async def create() -> tuple[float, pb.Sandbox]:
            started = time.perf_counter()
            reply = await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="bench"))
            return (time.perf_counter() - started) * 1000, reply.sandbox

        async def kill(s: pb.Sandbox) -> None:
            await stub.KillSandbox(pb.KillSandboxRequest(tenant="bench", sandbox_id=s.sandbox_id))

        async def wait_pool() -> None:
            while backend.pools["base"].ready < args.pool:
                await asyncio.sleep(0.05)

        if args.only_many:
            await many_step(args, stub, backend, create)
            return
        # Warm: one create at a time, pool full before each.
        warm = []
        for _ in range(args.samples):
            await wait_pool()
            ms, sandbox = await create()
            warm.append(ms)
            await kill(sandbox)
        print(f"create warm  (n={len(warm)}): p50 {pct(warm, .5):.1f} ms  "
              f"p99 {pct(warm, .99):.1f} ms")  # fmt: skip
        # Cold: empty the pool first.
        backend.pools["base"].size = 0
        for entry in backend.pools["base"].drain():
            await backend._destroy(entry)
        cold = []
        for _ in range(max(args.samples // 3, 5)):
            ms, sandbox = await create()
            cold.append(ms)
            await kill(sandbox)
        print(f"create cold  (n={len(cold)}): p50 {pct(cold, .5):.1f} ms  "
              f"p99 {pct(cold, .99):.1f} ms")  # fmt: skip
        # Sustained: create+kill for a fixed time, pool refilling.
        backend.pools["base"].size = args.pool
        backend.pools["base"].poke()
        await wait_pool()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            results = await asyncio.gather(*(create() for _ in range(4)))
            done += len(results)
            await asyncio.gather(*(kill(s) for _, s in results))
        rate = done / (time.perf_counter() - started)
        print(f"sustained create+kill, 4 in flight: {rate:.1f} creates/s over {args.seconds} s")
        await many_step(args, stub, backend, create)


async def many_step(
    args: argparse.Namespace,
    stub: pb_grpc.SandboxServiceStub,
    backend: LocalBackend,
    create: Callable[[], Awaitable[tuple[float, pb.Sandbox]]],
) -> None:
    """N concurrent sandboxes (cold: the pool is far smaller), then memory per idle one."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(create() for _ in range(args.sandboxes)), return_exceptions=True
    )
    took = time.perf_counter() - started
    many = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = collections.Counter(
        f"{o.code().name}: {o.details()}" if isinstance(o, grpc.aio.AioRpcError) else repr(o)
        for o in outcomes
        if isinstance(o, BaseException)
    )
    lat = [ms for ms, _ in many] or [0.0]
    print(f"{args.sandboxes} concurrent creates: {len(many)} ok in {took:.1f} s "
          f"(p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms)")  # fmt: skip
    print(f"failed: {dict(failed)}")
    if not many:
        return
    await asyncio.sleep(2)
    mem = [memory_kib(backend.live[s.sandbox_id].process.pid) for _, s in many]
    rss, pss = [m[0] for m in mem], [m[1] for m in mem]
    print(
        f"memory per idle sandbox (sh+unshare+init+picod), PSS mean "
        f"{statistics.mean(pss) / 1024:.1f} "
        f"MiB max {max(pss) / 1024:.1f} MiB; RSS mean {statistics.mean(rss) / 1024:.1f} MiB; "
        f"all {len(mem)}: PSS {sum(pss) / 1024:.0f} MiB"
    )
    listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant="bench"))
    print(f"total_running after: {listed.total_running}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument("--only-many", action="store_true", help="only the N-sandboxes step")
    parser.add_argument(
        "--rootfs-cache-dir",
        default=os.environ.get("AGENTCUBE_E2B_ROOTFS_CACHE_DIR"),
        help="where the base rootfs is (default $AGENTCUBE_E2B_ROOTFS_CACHE_DIR, else it is "
        "built into the bench's state dir)",
    )
    args = parser.parse_args()
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
