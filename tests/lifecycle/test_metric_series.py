"""Sandbox metrics as E2B serves them: a bounded series per sandbox, filtered by start/end.

The pure parts (the ring buffer, the window, the cgroup files, the reader) are tested on
their own; the series end to end runs real isolated sandboxes with a fast meter.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument
from extproc.lifecycle import limits, readings
from extproc.lifecycle.limits import Cgroups
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.metric_history import MetricHistory, check_window, within
from extproc.lifecycle.processes import start_ticks
from extproc.lifecycle.readings import DISK_WALK_EVERY_S, Reader, Target
from extproc.lifecycle.sandboxes import Metric, Sandbox, State
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings

from .conftest import Client, _assert_no_leak, make_settings
from .helpers import run_command

TENANT = "team-a"
INTERVAL_S = 0.2
MAX_SAMPLES = 5
WAIT_S = 30.0  # an upper bound for the machine's slowest moment, not a timing assertion


def _metric(timestamp: float, **changes: int) -> Metric:
    values = {"cpu_count": 2, "cpu_used_pct": 1.5, "mem_used": 10, "mem_total": 20,
              "mem_cache": 3, "disk_used": 4, "disk_total": 5}  # fmt: skip
    values.update(changes)
    return Metric(timestamp=timestamp, **values)  # type: ignore[arg-type]


# -- the ring buffer and the window ---------------------------------------------------------


def test_history_keeps_the_newest_samples_up_to_the_cap() -> None:
    history = MetricHistory(3)
    history.open("a")
    for second in range(5):
        history.append("a", _metric(100.0 + second, mem_used=second))
    kept = history.samples("a")
    assert [m.timestamp for m in kept] == [102.0, 103.0, 104.0]
    assert kept[-1] == _metric(104.0, mem_used=4)  # every field survives the packing


def test_history_samples_arrive_only_between_open_and_forget() -> None:
    history = MetricHistory(3)
    history.append("a", _metric(1.0))  # never opened: dropped
    assert history.samples("a") == [] and len(history) == 0
    history.open("a")
    history.open("a")  # idempotent: keeps what is there
    history.append("a", _metric(2.0))
    history.open("a")
    assert [m.timestamp for m in history.samples("a")] == [2.0]
    history.forget("a")
    history.append("a", _metric(3.0))  # read while the sandbox ended
    assert history.samples("a") == [] and len(history) == 0
    history.forget("a")  # idempotent


@pytest.mark.parametrize("max_samples", [0, -1])
def test_history_refuses_a_cap_below_one(max_samples: int) -> None:
    with pytest.raises(ValueError, match="max_samples"):
        MetricHistory(max_samples)


SERIES = [_metric(t) for t in (99.99, 100.0, 100.9, 101.5, 102.0)]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, [99.99, 100.0, 100.9, 101.5, 102.0]),
        (100, 101, [100.0, 100.9, 101.5]),  # inclusive at both ends, by whole second
        (101, 101, [101.5]),
        (102, None, [102.0]),
        (None, 99, [99.99]),
        (103, None, []),
        (None, 98, []),
    ],
)
def test_window_is_inclusive_at_whole_seconds(
    start: int | None, end: int | None, expected: list[float]
) -> None:
    assert [m.timestamp for m in within(SERIES, start, end)] == expected
    history = MetricHistory(10)
    history.open("a")
    for metric in SERIES:
        history.append("a", metric)
    assert history.window("a", start, end) == within(SERIES, start, end)


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    check_window(None, None)
    check_window(5, None)
    check_window(None, 5)
    check_window(5, 5)
    with pytest.raises(InvalidArgument, match=r"start \(6\) must not be after end \(5\)"):
        check_window(6, 5)


# -- cgroup files ---------------------------------------------------------------------------


def _fake_cgroup_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path)
    return tmp_path


def test_v2_memory_separates_page_cache_and_cpu_comes_from_cpu_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = _fake_cgroup_root(tmp_path, monkeypatch) / "g" / "sbx"
    group.mkdir(parents=True)
    (group / "memory.current").write_text("1000000\n")
    (group / "memory.stat").write_text("anon 600000\nfile 400000\nkernel 1000\n")
    (group / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    cgroups = Cgroups("v2", "g")
    assert cgroups.memory_bytes("sbx") == (600_000, 400_000)
    assert cgroups.cpu_seconds("sbx") == 2.5
    assert cgroups.memory_bytes("other") is None  # no such group
    assert cgroups.cpu_seconds("other") is None
    (group / "cpu.stat").write_text("usage_usec lots\n")
    assert cgroups.cpu_seconds("sbx") is None


def test_v1_memory_uses_total_cache_and_has_no_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_cgroup_root(tmp_path, monkeypatch)
    memory = root / "memory" / "g" / "sbx"
    memory.mkdir(parents=True)
    (root / "pids" / "g" / "sbx").mkdir(parents=True)
    (memory / "memory.usage_in_bytes").write_text("900000\n")
    (memory / "memory.stat").write_text("cache 100\nrss 5\ntotal_cache 300000\n")
    cgroups = Cgroups("v1", "g")
    assert cgroups.memory_bytes("sbx") == (600_000, 300_000)
    (memory / "memory.stat").write_text("cache 950000\nrss 5\n")  # usage lags: never < 0
    assert cgroups.memory_bytes("sbx") == (0, 950_000)
    assert cgroups.cpu_seconds("sbx") is None
    (memory / "memory.usage_in_bytes").write_text("garbage\n")
    assert cgroups.memory_bytes("sbx") is None
    assert Cgroups("none", "g").memory_bytes("sbx") is None


# -- the reader -----------------------------------------------------------------------------


def _sandbox(sandbox_id: str) -> Sandbox:
    return Sandbox(
        sandbox_id=sandbox_id, template_id="base", alias="", tenant=TENANT, metadata={},
        env_vars={}, started_at=0.0, end_at=0.0, state=State.RUNNING, cpu_count=2,
        memory_mb=512, disk_size_mb=1024, envd_version="0.2.4", envd_access_token="",
        endpoint_host="",
    )  # fmt: skip


def _own_target(sandbox_id: str, home: Path) -> Target:
    """This test process as a sandbox without isolation: /proc for CPU and RSS."""
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    return Target(_sandbox(sandbox_id), os.getpid(), ticks, None, None, home)


def test_reader_without_a_cgroup_sums_rss_and_reports_no_cache(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"x" * 100_000)
    [(sandbox_id, metric)] = Reader().read([_own_target("a", tmp_path)], 1e9).items()
    assert sandbox_id == "a"
    assert metric.timestamp == 1e9
    assert metric.mem_cache == 0
    assert 1_000_000 < metric.mem_used < 10**11  # this process's RSS at least
    assert (metric.cpu_count, metric.mem_total, metric.disk_total) == (2, 512 << 20, 1 << 30)
    assert metric.disk_used >= 100_000
    assert 0.0 <= metric.cpu_used_pct <= 100.0


def test_reader_walks_a_home_at_most_every_30_s(tmp_path: Path) -> None:
    reader = Reader()
    target = _own_target("a", tmp_path)
    first = reader.read([target], 1000.0)["a"].disk_used
    (tmp_path / "blob").write_bytes(b"x" * 1_000_000)
    soon = reader.read([target], 1000.0 + DISK_WALK_EVERY_S - 1)["a"].disk_used
    later = reader.read([target], 1000.0 + DISK_WALK_EVERY_S)["a"].disk_used
    assert soon == first and later >= first + 1_000_000
    reader.forget("a")  # a new sandbox of the same id walks again at once
    (tmp_path / "more").write_bytes(b"x" * 1_000_000)
    assert reader.read([target], 1000.0 + DISK_WALK_EVERY_S + 1)["a"].disk_used > later


def test_reader_skips_a_sandbox_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(layer: Path) -> int:
        raise OSError(f"{layer}: gone")

    monkeypatch.setattr(readings, "_layer_used", unreadable)
    good = _own_target("good", tmp_path)
    bad = Target(_sandbox("bad"), good.pid, good.pid_ticks, None, tmp_path / "layer", tmp_path)
    assert set(Reader().read([bad, good], 1e9)) == {"good"}


def test_reader_cpu_is_the_share_used_since_the_previous_sample(tmp_path: Path) -> None:
    reader = Reader()
    target = _own_target("a", tmp_path)
    reader.read([target], 1e9)
    deadline = os.times().user + 0.3
    while os.times().user < deadline:  # burn 0.3 s of CPU
        pass
    # 0.3 s or more of CPU over 1000 s of wall time on 2 CPUs: a small, non-zero share;
    # over 0.6 s it would be at least 25 %.
    assert 0.0 < reader.read([target], 1e9 + 1000)["a"].cpu_used_pct < 1.0


# -- end to end: real sandboxes, a fast meter -----------------------------------------------


def _settings(state_dir: Path, interval_s: float, max_samples: int) -> LifecycleSettings:
    base = make_settings(state_dir)
    local = replace(base.local, metrics_interval_s=interval_s, metrics_max_samples=max_samples)
    return LifecycleSettings(server=base.server, local=local)


@pytest.fixture
async def metered(tmp_path: Path) -> AsyncIterator[Client]:
    async with (
        serving(_settings(tmp_path / "state", INTERVAL_S, MAX_SAMPLES)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Client(running, channel)
    _assert_no_leak(tmp_path / "state")


@pytest.fixture
async def unswept(tmp_path: Path) -> AsyncIterator[Client]:
    """A meter whose sweeps never come back during a test: only first samples happen."""
    async with (
        serving(_settings(tmp_path / "state", 3600.0, MAX_SAMPLES)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Client(running, channel)
    _assert_no_leak(tmp_path / "state")


def _backend(client: Client) -> LocalBackend:
    backend = client.running.backend
    assert isinstance(backend, LocalBackend)
    return backend


async def _create(client: Client) -> pb.Sandbox:
    reply = await client.sandboxes.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT))
    sandbox: pb.Sandbox = reply.sandbox
    return sandbox


async def _metrics(client: Client, sandbox_id: str, **window: int) -> list[pb.SandboxMetric]:
    request = pb.GetSandboxMetricsRequest(sandbox_id=sandbox_id, tenant=TENANT)
    for name, seconds in window.items():
        getattr(request, name).seconds = seconds
    return list((await client.sandboxes.GetSandboxMetrics(request)).metrics)


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"still not {what}"
        await asyncio.sleep(INTERVAL_S / 4)


async def _sweeps(client: Client, count: int) -> None:
    """Wait until `count` more sweeps have completed."""
    meter = _backend(client).meter
    target = meter.sweeps + count

    async def done() -> bool:
        return meter.sweeps >= target

    await _until(done, f"{count} sweeps later")


def _seconds(metric: pb.SandboxMetric) -> float:
    return float(metric.timestamp.ToNanoseconds()) / 1e9


async def test_the_series_grows_a_sample_a_sweep_and_keeps_the_newest(metered: Client) -> None:
    meter = _backend(metered).meter
    sandbox = await _create(metered)

    def now() -> tuple[int, list[Metric]]:
        # Read together, in one step of the loop: a sweep appends and counts in one step.
        return meter.sweeps, meter.history.samples(sandbox.sandbox_id)

    async def sampled() -> bool:
        return bool(now()[1])

    await _until(sampled, "sampled once")
    sweeps, series = now()
    await _sweeps(metered, 2)
    later_sweeps, later = now()
    assert len(later) == min(len(series) + later_sweeps - sweeps, MAX_SAMPLES)
    assert later[: len(series)] == series[-len(later) :] or len(later) == MAX_SAMPLES

    async def full_and_moved_on() -> bool:
        current = now()[1]
        assert len(current) <= MAX_SAMPLES
        return len(current) == MAX_SAMPLES and current[0].timestamp > series[-1].timestamp

    await _until(full_and_moved_on, "full with the first samples dropped")
    served = await _metrics(metered, sandbox.sandbox_id)
    assert len(served) == MAX_SAMPLES
    stamps = [_seconds(m) for m in served]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_a_fresh_sandbox_has_its_first_sample_at_once(unswept: Client) -> None:
    backend = _backend(unswept)
    sandbox = await _create(unswept)

    async def sampled() -> bool:
        return bool(backend.meter.history.samples(sandbox.sandbox_id))

    await _until(sampled, "sampled after its Create")  # no sweep for an hour: the first
    [first] = backend.meter.history.samples(sandbox.sandbox_id)
    assert first.timestamp >= sandbox.started_at.ToNanoseconds() / 1e9
    assert [_seconds(m) for m in await _metrics(unswept, sandbox.sandbox_id)] == [
        pytest.approx(first.timestamp, abs=1e-6)
    ]


async def test_an_empty_buffer_answers_one_sample_taken_now(unswept: Client) -> None:
    backend = _backend(unswept)
    sandbox = await _create(unswept)

    async def sampled() -> bool:
        return bool(backend.meter.history.samples(sandbox.sandbox_id))

    await _until(sampled, "sampled after its Create")  # so that nothing else lands
    backend.meter.history.forget(sandbox.sandbox_id)  # as after a restart re-adopts it
    series = await _metrics(unswept, sandbox.sandbox_id)
    assert len(series) == 1 and series[0].mem_used > 0
    assert await _metrics(unswept, sandbox.sandbox_id) == series  # kept, not taken again


async def test_paused_sandboxes_get_no_new_samples_and_windows_filter(metered: Client) -> None:
    sandbox = await _create(metered)
    ident = {"sandbox_id": sandbox.sandbox_id, "tenant": TENANT}

    async def three() -> bool:
        return len(await _metrics(metered, sandbox.sandbox_id)) >= 3

    await _until(three, "three samples in")
    await metered.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**ident))
    await _sweeps(metered, 1)  # one in flight at the pause may still land
    frozen = await _metrics(metered, sandbox.sandbox_id)
    await _sweeps(metered, 3)
    assert await _metrics(metered, sandbox.sandbox_id) == frozen

    whole = [math.floor(_seconds(m)) for m in frozen]
    first, last = whole[0], whole[-1]
    windows = [(first, first), (first, last), (last, last), (first - 10, first), (last, last + 10)]
    for start, end in windows:
        got = await _metrics(metered, sandbox.sandbox_id, start=start, end=end)
        assert got == [m for m, s in zip(frozen, whole, strict=True) if start <= s <= end]
        assert got  # each window names a second that has samples
    assert await _metrics(metered, sandbox.sandbox_id, start=last + 1) == []
    assert await _metrics(metered, sandbox.sandbox_id, end=first - 1) == []
    assert await _metrics(metered, sandbox.sandbox_id, start=first) == frozen

    for sandbox_id, code in ((sandbox.sandbox_id, grpc.StatusCode.INVALID_ARGUMENT),
                             ("nosuchsandbox", grpc.StatusCode.NOT_FOUND)):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _metrics(metered, sandbox_id, start=last + 1, end=last)
        assert info.value.code() == code

    await metered.sandboxes.ResumeSandbox(pb.ResumeSandboxRequest(**ident))  # type: ignore[arg-type]

    async def sampled_again() -> bool:
        return (await _metrics(metered, sandbox.sandbox_id))[-1] != frozen[-1]

    await _until(sampled_again, "sampled again after the resume")


async def test_a_killed_sandbox_frees_its_series(metered: Client) -> None:
    backend = _backend(metered)
    kept = await _create(metered)
    killed = await _create(metered)
    await _sweeps(metered, 2)
    assert backend.meter.history.samples(killed.sandbox_id)
    await metered.sandboxes.KillSandbox(
        pb.KillSandboxRequest(sandbox_id=killed.sandbox_id, tenant=TENANT)
    )
    assert backend.meter.history.samples(killed.sandbox_id) == []
    await _sweeps(metered, 2)  # and no sweep brings it back
    assert backend.meter.history.samples(killed.sandbox_id) == []
    assert len(backend.meter.history) == 1 and backend.meter.history.samples(kept.sandbox_id)


async def test_isolated_memory_cache_and_disk_follow_a_written_file(metered: Client) -> None:
    backend = _backend(metered)
    assert backend.isolation is not None and backend.isolation.cgroups.mode != "none"
    sandbox = await _create(metered)
    before = (await _metrics(metered, sandbox.sandbox_id))[-1]
    code, _ = await run_command(sandbox, "head -c 20000000 /dev/urandom > /home/user/blob")
    assert code == 0
    await _sweeps(metered, 2)
    after = (await _metrics(metered, sandbox.sandbox_id))[-1]
    # The written file sits in the page cache, charged to the sandbox's cgroup, not in its
    # processes' memory; the layer's filesystem holds it.
    assert after.mem_cache >= before.mem_cache + 15_000_000
    assert after.mem_used < 512 * 1024 * 1024
    assert after.disk_used >= before.disk_used + 19_000_000
