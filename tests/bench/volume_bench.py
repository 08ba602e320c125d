"""Volume benchmarks: content API write/read throughput (to the lifecycle's content server
directly, and through `up`'s Envoy as the SDK reaches it) and what mounting volumes adds to
a sandbox create (warm pool and cold).

Run (root, with the base rootfs built):
    .venv/bin/python tests/bench/volume_bench.py [--mib 256] [--samples 15]
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from _measure import exported, free_port, pct, start_up

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings
from extproc.lifecycle.volumes import LocalVolumes


async def _curl(*argv: str) -> float:
    """Seconds one curl (a client in a process of its own, as the SDK's would be) takes."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "-o", "/dev/null", *argv
    )
    if await process.wait() != 0:
        raise RuntimeError(f"curl {argv} failed")
    return time.perf_counter() - started


async def transfer(base: list[str], volume: pb.Volume, mib: int, what: str) -> None:
    """PUT then GET a `mib` MiB file with curl (`base`: its address options and the base
    URL last); MiB/s each way, the best of three rounds (a shared machine is noisy)."""
    scratch = tempfile.TemporaryDirectory(prefix="volume-bench-blob-")
    blob = Path(scratch.name) / "blob"
    blob.write_bytes(os.urandom(mib * 1024 * 1024))
    *options, url = base
    target = f"{url}/volumecontent/{volume.volume_id}/file?path=/bench"
    bearer = ["-H", f"Authorization: Bearer {volume.token}"]
    writes, reads = [], []
    for _ in range(3):
        writes.append(await _curl(*options, *bearer, "-T", str(blob), target))
        reads.append(await _curl(*options, *bearer, target))
    scratch.cleanup()
    print(f"{what}: write {mib / min(writes):.0f} MiB/s, read {mib / min(reads):.0f} MiB/s "
          f"(best of 3, {mib} MiB)")  # fmt: skip


def _timed_attach(volumes: LocalVolumes, took: list[float]) -> None:
    """Record how long each attach (all of a create's volumes) takes."""
    attach = volumes.attach

    async def timed(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return await attach(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            took.append((time.perf_counter() - started) * 1000)

    volumes.attach = timed  # type: ignore[method-assign]


async def mount_cost(
    stub: pb_grpc.SandboxServiceStub, backend: LocalBackend, volumes: list[pb.Volume],
    samples: int, pool: int,
) -> None:  # fmt: skip
    took: list[float] = []
    _timed_attach(backend.volumes, took)

    async def wait_pool() -> None:
        while backend.pools["base"].ready < pool:
            await asyncio.sleep(0.05)

    async def create(count: int) -> float:
        mounts = [pb.VolumeMount(name=v.name, path=f"/mnt/{v.name}") for v in volumes[:count]]
        started = time.perf_counter()
        made = await stub.CreateSandbox(
            pb.CreateSandboxRequest(tenant="bench", volume_mounts=mounts)
        )
        ms = (time.perf_counter() - started) * 1000
        await stub.KillSandbox(
            pb.KillSandboxRequest(tenant="bench", sandbox_id=made.sandbox.sandbox_id)
        )
        return ms

    async def series(label: str, count: int, before: Callable[[], Awaitable[None]]) -> None:
        took.clear()
        times = []
        for _ in range(samples):
            await before()
            times.append(await create(count))
        attach = f", attach p50 {pct(took, 0.5):.1f} ms" if took else ""
        print(f"create {label} with {count} volume(s) (n={samples}): p50 "
              f"{pct(times, .5):.1f} ms, p99 {pct(times, .99):.1f} ms{attach}")  # fmt: skip

    async def nothing() -> None:
        return None

    for count in (0, 1, 4):
        await series("warm", count, wait_pool)
    backend.pools["base"].size = 0
    for entry in backend.pools["base"].drain():
        await backend._destroy(entry)
    for count in (0, 1):
        await series("cold", count, nothing)


async def in_process(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="volume-bench-"))
    socket = state / "volumes.sock"
    settings = LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0", volume_content_listen=f"unix:{socket}"),
        local=LocalSettings(
            state_dir=state, pool_size=args.pool, interpreter_pool_size=0, kill_on_exit=True,
            volume_mb=max(4096, args.mib * 4),
            rootfs_cache_dir=Path(args.rootfs_cache_dir) if args.rootfs_cache_dir else None,
        ),
    )  # fmt: skip
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        volumes_stub = pb_grpc.VolumeServiceStub(channel)
        started = time.perf_counter()
        created = [
            (await volumes_stub.CreateVolume(
                pb.CreateVolumeRequest(tenant="bench", name=f"v{i}"))).volume
            for i in range(4)
        ]  # fmt: skip
        print(f"Volume.create: {(time.perf_counter() - started) * 1000 / 4:.0f} ms each "
              f"(sparse {settings.local.volume_mb} MiB ext4 image, mkfs + mount)")  # fmt: skip
        await transfer(["--unix-socket", str(socket), "http://volumes"], created[0], args.mib,
                       "content API, direct (unix socket)")  # fmt: skip
        backend = running.backend
        assert isinstance(backend, LocalBackend)
        await mount_cost(pb_grpc.SandboxServiceStub(channel), backend, created, args.samples,
                         args.pool)  # fmt: skip
    shutil.rmtree(state)  # the volumes were unmounted when the service stopped


async def through_up(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="volume-bench-up-"))
    process, printed = start_up(state, state / "up.log", listen=free_port())
    try:
        env = exported(printed)
        headers = {"X-API-Key": env["E2B_API_KEY"]}
        async with httpx.AsyncClient(base_url=env["E2B_API_URL"], timeout=60) as client:
            made = await client.post("/volumes", json={"name": "bench"}, headers=headers)
        if made.status_code != 201:
            raise RuntimeError(f"POST /volumes: {made.status_code} {made.text}")
        body = made.json()
        volume = pb.Volume(volume_id=body["volumeID"], name="bench", token=body["token"])
        await transfer([env["E2B_VOLUME_API_URL"]], volume, args.mib,
                       "content API through up (Envoy)")  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="file size per transfer")
    parser.add_argument("--samples", type=int, default=15, help="creates per series")
    parser.add_argument("--pool", type=int, default=2, help="warm pool size")
    parser.add_argument("--rootfs-cache-dir", default=os.environ.get(
        "AGENTCUBE_E2B_ROOTFS_CACHE_DIR"))  # fmt: skip
    args = parser.parse_args()
    asyncio.run(in_process(args))
    asyncio.run(through_up(args))


if __name__ == "__main__":
    main()
