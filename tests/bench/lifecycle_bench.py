"""Lifecycle benchmarks: Create latency (warm pool and cold), picod's start (CPU, memory),
sustained creates/s with the pool empty and with it refilling, what a pool refill leaves to
running work, and N concurrent cold creates.

Run: .venv/bin/python tests/bench/lifecycle_bench.py [--samples 30] [--seconds 20]
     [--sandboxes 200] [--pool 4] [--in-flight 8] [--refill 16] [--steps warm,cold,...]
Prints numbers; asserts nothing. Wall-clock figures depend on the machine's load (printed
first); the CPU figures much less.

- picod start CPU: picod's own CPU (every thread's schedstat) when Create returns, i.e.
  from its exec (or its fork from the zygote) until it served /health; "sandbox processes"
  adds every other process of the sandbox (supervisor, init).
- sustained, pool empty: `--in-flight` loops of Create then Kill for `--seconds`; CPU per
  create is the whole machine's busy time (/proc/stat) divided by the creates, so other
  jobs on the machine inflate it.
- refill vs running work: one busy loop per CPU at normal priority (stand-ins for
  sandboxes running code: processes like theirs) count iterations for 2 s with nothing
  else, then for 2 s while the pool refills `--refill` sandboxes; `--refill-rounds` times.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from _measure import memory_kib, pct

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.networking import netns_prefix
from extproc.lifecycle.processes import tree
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings

Create = Callable[[], Awaitable[tuple[float, pb.Sandbox]]]
# The platform API's default rate limit (600 creates a minute per namespace) would cap the
# sustained steps: the bench's namespace has none to speak of.
QUOTA = pb.TenantQuota(creates_per_minute=1_000_000)
_BUSY = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    n += 1
print(n)
"""


def _cpu_ms(pid: int) -> float:
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        pass
    return total / 1e6


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _picod(supervisor: int) -> int | None:
    """The sandbox's picod (exec'd or forked: both show `extproc.cli picod`)."""
    found = [p for p in tree(supervisor) if b"extproc.cli\0picod" in _command_line(p)]
    return found[-1] if found else None


def _memory(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS, USS) of one process in MiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields["Rss"] / 1024, fields["Pss"] / 1024, private / 1024


def _busy_cpu_s() -> float:
    """Seconds every CPU of the machine has been busy (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _, _, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuAccount:
    """CPU time of this process and everything it starts (the lifecycle service runs in it,
    the zygote is its child), from a cgroup v1 `cpuacct` group of its own, plus that of
    the sandboxes' own cpuacct groups where they have them (limits.py); None where the
    group cannot be made. Kernel work done in kernel threads (a network namespace's
    cleanup) is not counted."""

    def __init__(self, state: Path) -> None:
        root = Path("/sys/fs/cgroup/cpuacct")
        self._sandboxes = root / f"agentcube-e2b-{netns_prefix(state)}"
        self._group: Path | None = root / f"lifecycle-bench-{os.getpid()}"
        try:
            self._group.mkdir()
            (self._group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            self._group = None

    def seconds(self) -> float | None:
        if self._group is None:
            return None
        total = int((self._group / "cpuacct.usage").read_text())
        with contextlib.suppress(OSError):
            total += int((self._sandboxes / "cpuacct.usage").read_text())
        return total / 1e9

    def close(self) -> None:
        if self._group is not None:
            Path("/sys/fs/cgroup/cpuacct/cgroup.procs").write_text(str(os.getpid()))
            for _ in range(50):  # the zygote and the last sandboxes are still exiting
                try:
                    self._group.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


ACCOUNT: CpuAccount | None = None


def _ours_ms(before: float | None, count: int) -> str:
    now = ACCOUNT.seconds() if ACCOUNT else None
    if before is None or now is None:
        return "n/a"
    return f"{(now - before) / max(count, 1) * 1000:.0f} ms"


def _ours() -> float | None:
    return ACCOUNT.seconds() if ACCOUNT else None


def _load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


async def bench(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    global ACCOUNT
    ACCOUNT = CpuAccount(state)
    settings = LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0"),
        local=LocalSettings(
            state_dir=state,
            pool_size=args.pool,
            interpreter_pool_size=0,
            kill_on_exit=True,
            max_sandboxes=args.sandboxes + max(args.pool, args.refill) + args.in_flight + 8,
            rootfs_cache_dir=Path(args.rootfs_cache_dir) if args.rootfs_cache_dir else None,
        ),
    )
    print(f"load average {_load()} on {os.cpu_count()} CPUs")
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.SandboxServiceStub(channel)
        backend = running.backend

        async def create() -> tuple[float, pb.Sandbox]:
            started = time.perf_counter()
            reply = await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="bench", quota=QUOTA))
            return (time.perf_counter() - started) * 1000, reply.sandbox

        async def kill(s: pb.Sandbox) -> None:
            await stub.KillSandbox(pb.KillSandboxRequest(tenant="bench", sandbox_id=s.sandbox_id))

        steps = set(args.steps.split(","))
        if "warm" in steps:
            await warm_step(args, backend, create, kill)
        await empty_pool(backend)
        if "cold" in steps:
            await cold_step(args, backend, create, kill)
        if "sustained" in steps:
            await sustained_cold_step(args, create, kill)
        if "refilling" in steps:
            await sustained_refilling_step(args, backend, create, kill)
        if "refill" in steps:
            await refill_step(args, backend)
        await empty_pool(backend)
        if "many" in steps:
            await many_step(args, stub, backend, create)


async def empty_pool(backend: LocalBackend) -> None:
    pool = backend.pools["base"]
    pool.size = 0
    for entry in pool.drain():
        await backend._destroy(entry)


async def wait_pool(backend: LocalBackend, size: int) -> None:
    while backend.pools["base"].ready < size:
        await asyncio.sleep(0.05)


async def warm_step(
    args: argparse.Namespace, backend: LocalBackend, create: Create,
    kill: Callable[[pb.Sandbox], Awaitable[None]],
) -> None:  # fmt: skip
    warm = []
    for _ in range(args.samples):
        await wait_pool(backend, args.pool)
        ms, sandbox = await create()
        warm.append(ms)
        await kill(sandbox)
    print(f"create warm  (n={len(warm)}): p50 {pct(warm, .5):.1f} ms  "
          f"p99 {pct(warm, .99):.1f} ms")  # fmt: skip


async def cold_step(
    args: argparse.Namespace, backend: LocalBackend, create: Create,
    kill: Callable[[pb.Sandbox], Awaitable[None]],
) -> None:  # fmt: skip
    """Cold creates one at a time, picod's start CPU in each, then one idle picod's memory."""
    cold, picod_cpu, tree_cpu = [], [], []
    ours = _ours()
    for _ in range(args.samples):
        ms, sandbox = await create()
        cold.append(ms)
        supervisor = backend.live[sandbox.sandbox_id].process.pid
        picod = _picod(supervisor)
        if picod is not None:
            picod_cpu.append(_cpu_ms(picod))
            tree_cpu.append(sum(_cpu_ms(p) for p in tree(supervisor)))
        await kill(sandbox)
    print(
        f"create cold  (n={len(cold)}): p50 {pct(cold, 0.5):.1f} ms  "
        f"p99 {pct(cold, 0.99):.1f} ms; our CPU per create+kill {_ours_ms(ours, len(cold))}"
    )
    if picod_cpu:
        print(f"picod start CPU: median {statistics.median(picod_cpu):.1f} ms, max "
              f"{max(picod_cpu):.1f} ms; all the sandbox's processes: median "
              f"{statistics.median(tree_cpu):.1f} ms")  # fmt: skip
    _, sandbox = await create()
    await asyncio.sleep(2)
    picod = _picod(backend.live[sandbox.sandbox_id].process.pid)
    if picod is not None:
        rss, pss, uss = _memory(picod)
        print(f"idle picod: RSS {rss:.1f} MiB, PSS {pss:.1f} MiB, private (USS) {uss:.1f} MiB")
    await kill(sandbox)


async def sustained_cold_step(
    args: argparse.Namespace, create: Create, kill: Callable[[pb.Sandbox], Awaitable[None]]
) -> None:
    done = 0
    latencies: list[float] = []
    stop = time.perf_counter() + args.seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            ms, sandbox = await create()
            latencies.append(ms)
            done += 1
            await kill(sandbox)

    busy, ours, started = _busy_cpu_s(), _ours(), time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(args.in_flight)))
    elapsed = time.perf_counter() - started
    cpu = (_busy_cpu_s() - busy) / max(done, 1) * 1000
    print(f"sustained create+kill, pool empty, {args.in_flight} in flight: {done / elapsed:.1f} "
          f"creates/s over {elapsed:.1f} s (create p50 {pct(latencies, .5):.0f} ms, p99 "
          f"{pct(latencies, .99):.0f} ms; CPU per create+kill: ours {_ours_ms(ours, done)}, "
          f"the machine's {cpu:.0f} ms; load {_load()})")  # fmt: skip


async def sustained_refilling_step(
    args: argparse.Namespace, backend: LocalBackend, create: Create,
    kill: Callable[[pb.Sandbox], Awaitable[None]],
) -> None:  # fmt: skip
    pool = backend.pools["base"]
    pool.size = args.pool
    pool.poke()
    await wait_pool(backend, args.pool)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        results = await asyncio.gather(*(create() for _ in range(4)))
        done += len(results)
        await asyncio.gather(*(kill(s) for _, s in results))
    rate = done / (time.perf_counter() - started)
    print(f"sustained create+kill, pool of {args.pool} refilling, 4 in flight: {rate:.1f} "
          f"creates/s over {args.seconds:g} s")  # fmt: skip


async def _busy_rate(seconds: float) -> float:
    """Iterations per second of one busy loop per CPU, summed."""
    loops = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _BUSY, str(seconds), stdout=asyncio.subprocess.PIPE
        )
        for _ in range(os.cpu_count() or 1)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in loops))
    return sum(int(out) for out, _ in outputs) / seconds


async def refill_step(args: argparse.Namespace, backend: LocalBackend) -> None:
    """Rounds of: busy loops alone for 2 s, then busy loops while the pool refills; the
    ratio of their rates per round (alternating, so load from other jobs on the machine
    weighs on both sides alike), and its median."""
    pool = backend.pools["base"]
    ratios, made, took = [], [], []
    for _ in range(args.refill_rounds):
        await empty_pool(backend)
        await asyncio.sleep(3)  # the kernel tears the killed sandboxes' namespaces down
        alone = await _busy_rate(2.0)
        pool.size = args.refill
        pool.poke()
        started = time.perf_counter()
        during = await _busy_rate(2.0)
        made.append(pool.ready)
        await wait_pool(backend, args.refill)
        took.append(time.perf_counter() - started)
        ratios.append(during / alone)
    print(f"running work while the pool refills {args.refill}: median "
          f"{statistics.median(ratios):.2f} of its rate alone (rounds: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; {statistics.median(made):.0f} sandboxes "
          f"made in the 2 s, the whole refill took {statistics.median(took):.1f} s)")  # fmt: skip


async def many_step(
    args: argparse.Namespace,
    stub: pb_grpc.SandboxServiceStub,
    backend: LocalBackend,
    create: Create,
) -> None:
    """N concurrent cold sandboxes (the pool is empty), then memory per idle one."""
    started, ours = time.perf_counter(), _ours()
    outcomes = await asyncio.gather(
        *(create() for _ in range(args.sandboxes)), return_exceptions=True
    )
    took = time.perf_counter() - started
    print(f"  our CPU per concurrent create: {_ours_ms(ours, args.sandboxes)}")
    many = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = collections.Counter(
        f"{o.code().name}: {o.details()}" if isinstance(o, grpc.aio.AioRpcError) else repr(o)
        for o in outcomes
        if isinstance(o, BaseException)
    )
    lat = [ms for ms, _ in many] or [0.0]
    print(f"{args.sandboxes} concurrent creates, pool empty: {len(many)} ok, all up after "
          f"{took:.1f} s (p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms)")  # fmt: skip
    print(f"failed: {dict(failed)}")
    if not many:
        return
    await asyncio.sleep(2)
    mem = [memory_kib(backend.live[s.sandbox_id].process.pid) for _, s in many]
    rss, pss = [m[0] for m in mem], [m[1] for m in mem]
    picods = [_picod(backend.live[s.sandbox_id].process.pid) for _, s in many]
    picod_rss = [_memory(p)[0] for p in picods if p is not None]
    print(
        f"memory per idle sandbox (all its processes), PSS mean "
        f"{statistics.mean(pss) / 1024:.1f} MiB max {max(pss) / 1024:.1f} MiB; RSS mean "
        f"{statistics.mean(rss) / 1024:.1f} MiB; all {len(mem)}: PSS {sum(pss) / 1024:.0f} "
        f"MiB; picod alone: RSS mean {statistics.mean(picod_rss or [0]):.1f} MiB"
    )
    listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant="bench"))
    print(f"total_running after: {listed.total_running}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8, help="creates at once, pool empty")
    parser.add_argument("--refill", type=int, default=16, help="sandboxes the pool refills")
    parser.add_argument("--refill-rounds", type=int, default=4)
    parser.add_argument(
        "--steps",
        default="warm,cold,sustained,refilling,refill,many",
        help="which steps to run, comma-separated (default: all)",
    )
    parser.add_argument(
        "--rootfs-cache-dir",
        default=os.environ.get("AGENTCUBE_E2B_ROOTFS_CACHE_DIR"),
        help="where the base rootfs is (default $AGENTCUBE_E2B_ROOTFS_CACHE_DIR, else it is "
        "built into the bench's state dir)",
    )
    args = parser.parse_args()
    import uvloop

    try:
        uvloop.run(bench(args))
    finally:
        if ACCOUNT is not None:
            ACCOUNT.close()


if __name__ == "__main__":
    main()
