"""Template and snapshot benchmarks (issue 14's targets), on the lifecycle service in process:

- create from a built template: warm (its build's warm pool, `template_pool_size`) and cold;
- a one-step build on a cached parent (the parent built first; the step is `true`, so the
  time is the build's own overhead), and the same build again (every layer cached);
- a snapshot of a sandbox with 100 MiB written to its writable layer.

Run: .venv/bin/python tests/bench/templates_bench.py [--samples 20]
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import grpc
from _measure import pct

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings

TENANT = "bench"


async def build(
    builds: pb_grpc.TemplateBuildServiceStub, name: str, spec: pb.TemplateBuildSpec
) -> tuple[float, pb.TemplateBuild]:
    """(seconds from the build request to "ready", the build)."""
    started = time.perf_counter()
    asked = await builds.RequestTemplateBuild(
        pb.RequestTemplateBuildRequest(tenant=TENANT, name=name)
    )
    ids = {"tenant": TENANT, "template_id": asked.template.template_id,
           "build_id": asked.build_id}  # fmt: skip
    await builds.StartTemplateBuild(pb.StartTemplateBuildRequest(**ids, spec=spec))
    while True:
        status = await builds.GetTemplateBuildStatus(pb.GetTemplateBuildStatusRequest(**ids))
        if status.build.status == pb.BUILD_STATUS_READY:
            return time.perf_counter() - started, status.build
        if status.build.status == pb.BUILD_STATUS_ERROR:
            raise RuntimeError(f"build of {name} failed: {status.build.reason}")
        await asyncio.sleep(0.01)


def run(command: str) -> pb.TemplateBuildStep:
    return pb.TemplateBuildStep(type="RUN", args=[command])


async def bench(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="templates-bench-"))
    settings = LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0"),
        local=LocalSettings(
            state_dir=state, pool_size=0, interpreter_pool_size=0, kill_on_exit=True,
            template_pool_size=args.pool,
            rootfs_cache_dir=Path(args.rootfs_cache_dir) if args.rootfs_cache_dir else None,
        ),
    )  # fmt: skip
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        builds = pb_grpc.TemplateBuildServiceStub(channel)
        sandboxes = pb_grpc.SandboxServiceStub(channel)
        snapshots = pb_grpc.SnapshotServiceStub(channel)
        backend = running.backend

        parent = pb.TemplateBuildSpec(steps=[run("echo parent > /home/user/parent.txt")])
        took, _ = await build(builds, "bench-parent", parent)
        print(f"parent build (one RUN on base, cold): {took:.2f} s")
        child = pb.TemplateBuildSpec(from_template="bench-parent", steps=[run("true")])
        took, _ = await build(builds, "bench-child", child)
        print(f"one-step build on the cached parent (step `true`): {took:.2f} s")
        took, _ = await build(builds, "bench-child", child)
        print(f"the same build again (every layer cached): {took * 1000:.0f} ms")

        async def create() -> tuple[float, pb.Sandbox]:
            started = time.perf_counter()
            reply = await sandboxes.CreateSandbox(
                pb.CreateSandboxRequest(tenant=TENANT, template_id="bench-child")
            )
            return (time.perf_counter() - started) * 1000, reply.sandbox

        async def kill(sandbox: pb.Sandbox) -> None:
            await sandboxes.KillSandbox(
                pb.KillSandboxRequest(tenant=TENANT, sandbox_id=sandbox.sandbox_id)
            )

        template = backend.catalog_of().resolve("bench-child", TENANT)[0]
        pool = backend.pools[f"{template.template_id}@{template.build_id}"]
        warm = []
        for _ in range(args.samples):
            while pool.ready < args.pool:
                await asyncio.sleep(0.05)
            ms, sandbox = await create()
            warm.append(ms)
            await kill(sandbox)
        print(f"create from the built template, warm (n={len(warm)}): "
              f"p50 {pct(warm, .5):.1f} ms, p99 {pct(warm, .99):.1f} ms")  # fmt: skip
        pool.size = 0
        for entry in pool.drain():
            await backend._destroy(entry)
        cold = []
        for _ in range(max(args.samples // 2, 5)):
            ms, sandbox = await create()
            cold.append(ms)
            await kill(sandbox)
        print(f"create from the built template, cold (n={len(cold)}): "
              f"p50 {pct(cold, .5):.0f} ms, p99 {pct(cold, .99):.0f} ms")  # fmt: skip

        taken = []
        for _ in range(args.snapshots):
            reply = await sandboxes.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT))
            sandbox = reply.sandbox
            directory = state / "sandboxes" / sandbox.sandbox_id / "root" / "home" / "user"
            with (directory / "data.bin").open("wb") as data:  # 100 MiB through the overlay
                data.write(os.urandom(100 * 1024 * 1024))
            started = time.perf_counter()
            snapshot = await snapshots.CreateSnapshot(
                pb.CreateSnapshotRequest(tenant=TENANT, sandbox_id=sandbox.sandbox_id)
            )
            taken.append(time.perf_counter() - started)
            await kill(sandbox)
            await pb_grpc.TemplateServiceStub(channel).DeleteTemplate(
                pb.DeleteTemplateRequest(tenant=TENANT,
                                         template_id=snapshot.snapshot.template_id))  # fmt: skip
        print(f"snapshot of a sandbox with 100 MiB written (n={len(taken)}): "
              f"p50 {pct(taken, .5):.2f} s, max {max(taken):.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--pool", type=int, default=2, help="warm sandboxes per build")
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument(
        "--rootfs-cache-dir",
        default=os.environ.get("AGENTCUBE_E2B_ROOTFS_CACHE_DIR"),
        help="where the base rootfs is (default $AGENTCUBE_E2B_ROOTFS_CACHE_DIR)",
    )
    args = parser.parse_args()
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
