"""picod's own metric series (GET /metrics?start=&end=), its cgroup memory figures, and the
lifecycle service's client reading that series from a real picod."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.core.errors import InvalidArgument, Unavailable
from extproc.lifecycle.picod_client import PicodClient
from extproc.picod import command
from extproc.picod.measuring import Meter, MetricSeries, parse_window
from extproc.picod.sysinfo import MIB, MemoryCgroup, Sample, SystemMetrics

if TYPE_CHECKING:
    from conftest import PicodProcess

KEYS = ("ts", "cpu_count", "cpu_used_pct", "mem_total", "mem_used", "mem_cache",
        "mem_total_mib", "mem_used_mib", "disk_used", "disk_total")  # fmt: skip
WAIT_S = 30.0
SANDBOX = "sbxmetrics1"
TOKEN = "envd-token-metrics"


def _machine_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def _sample(ts: int, cpu: float = 1.5) -> Sample:
    return Sample(ts, 2, cpu, 8 * MIB, 3 * MIB, MIB, 10, 100)


# --- the query -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "window"),
    [
        (b"", None),
        (b"series=0", None),
        (b"other=1", None),  # unknown parameters are not ours to refuse
        (b"series=1", (None, None)),
        (b"series=true", (None, None)),
        (b"start=10", (10, None)),
        (b"end=10", (None, 10)),
        (b"start=10&end=10", (10, 10)),
        (b"start=-5&end=0&series=0", (-5, 0)),  # a bound asks for the series anyway
        (b"start=9223372036854775807", (2**63 - 1, None)),
    ],
)
def test_window_query(query: bytes, window: tuple[int | None, int | None] | None) -> None:
    assert parse_window(query) == window


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"start=", "start must be an integer"),
        (b"start=abc", "start must be an integer"),
        (b"end=1.5", "end must be an integer"),
        (b"start=%C2%B2", "start must be an integer"),  # a unicode digit
        (b"start=+5", "start must be an integer"),
        (b"start=9223372036854775808", "start is out of range"),
        (b"end=-9223372036854775809", "end is out of range"),
        (b"end=99999999999999999999999", "end must be an integer"),
        (b"start=11&end=10", "start (11) must not be after end (10)"),
        (b"start=1&start=2", "start is given more than once"),
        (b"series=yes%20please", "series must be 1 or 0"),
        (b"series=1&series=1", "series is given more than once"),
        (b"\xff=1", "the query string is not valid"),
    ],
)
def test_bad_window_query(query: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_window(query)


# --- the ring buffer -------------------------------------------------------------------------


def test_series_is_capped_and_windows_are_inclusive() -> None:
    series = MetricSeries(3)
    for ts in (100, 101, 101, 102):
        series.append(_sample(ts, cpu=ts / 10))
    assert len(series) == 3  # the first dropped off
    assert [s.ts for s in series.window(None, None)] == [101, 101, 102]
    assert series.window(101, 101) == [_sample(101, 10.1), _sample(101, 10.1)]
    assert [s.ts for s in series.window(102, None)] == [102]
    assert [s.ts for s in series.window(None, 100)] == []
    assert series.window(None, None)[-1] == _sample(102, 10.2)  # packed and back, unchanged


def test_series_needs_room_for_a_sample() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MetricSeries(0)


def test_meter_without_sampling_answers_a_sample_taken_now(tmp_path: Path) -> None:
    meter = Meter(tmp_path, interval_s=0, max_samples=10)
    try:
        before = int(time.time())
        (sample,) = meter.window(None, None)
        assert before <= sample.ts <= int(time.time())
        assert meter.window(sample.ts + 3600, None) == []
        assert len(meter.series) == 0  # nothing kept
    finally:
        meter.close()


def test_a_first_sample_taken_at_once_measures_cpu_since_boot(tmp_path: Path) -> None:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    since_boot = 100 * (1 - (fields[3] + fields[4]) / sum(fields[:8]))
    sample = SystemMetrics(tmp_path, None, cpu_since_boot=True).read()
    # a moment's span would say 0 or 100 (a jiffy or two, idle or busy)
    assert abs(sample.cpu_used_pct - since_boot) < 1


# --- memory from the cgroup ------------------------------------------------------------------


def _files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


V2 = {"memory.current": "50000000\n", "memory.stat": "anon 30000000\nfile 20000000\n",
      "memory.max": "268435456\n"}  # fmt: skip
V1 = {"memory.usage_in_bytes": "50000000\n",
      "memory.stat": "cache 1000\nrss 2\ntotal_cache 20000000\ntotal_rss 3\n",
      "memory.limit_in_bytes": "268435456\n"}  # fmt: skip


def _memory(cgroup: MemoryCgroup | None, home: Path) -> tuple[int, int, int]:
    sample = SystemMetrics(home, cgroup).read()
    return sample.mem_total, sample.mem_used, sample.mem_cache


def test_v2_group_in_a_cgroup_namespace(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    _files(mount, {"cgroup.controllers": "cpu memory pids\n", **V2})
    cgroup = MemoryCgroup.find(mount, "0::/\n")
    assert cgroup is not None and cgroup.usage == mount / "memory.current"
    assert _memory(cgroup, tmp_path) == (268435456, 30000000, 20000000)


def test_v2_group_by_path_and_without_a_limit(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    _files(mount, {"cgroup.controllers": "memory\n"})  # the host's root: no memory.current
    _files(mount / "kubepods" / "pod1", {**V2, "memory.max": "max\n"})
    cgroup = MemoryCgroup.find(mount, "0::/kubepods/pod1\n")
    assert cgroup is not None and cgroup.usage.parent == mount / "kubepods" / "pod1"
    assert _memory(cgroup, tmp_path) == (_machine_total(), 30000000, 20000000)
    assert MemoryCgroup.find(mount, "0::/\n") is None  # the root accounts for nothing


def test_v1_group_by_path_else_at_the_mount(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    _files(mount / "memory", V1)  # Docker on v1 mounts the container's own group here
    membership = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n"
    cgroup = MemoryCgroup.find(mount, membership)
    assert cgroup is not None and cgroup.usage == mount / "memory" / "memory.usage_in_bytes"
    # total_cache counts child groups' page cache too; cache is the group's own
    assert _memory(cgroup, tmp_path) == (268435456, 30000000, 20000000)
    _files(mount / "memory" / "docker" / "abc",
           {**V1, "memory.stat": "cache 7000000\n", "memory.usage_in_bytes": "9000000\n",
            "memory.limit_in_bytes": "9223372036854771712\n"})  # fmt: skip
    nested = MemoryCgroup.find(mount, membership)
    assert nested is not None and nested.usage.parent == mount / "memory" / "docker" / "abc"
    assert _memory(nested, tmp_path) == (_machine_total(), 2000000, 7000000)


def test_no_memory_accounting_means_the_machine(tmp_path: Path) -> None:
    assert MemoryCgroup.find(tmp_path / "missing", "0::/\n") is None
    mount = tmp_path / "cgroup"
    _files(mount / "cpu", {"cpu.shares": "1024\n"})
    assert MemoryCgroup.find(mount, "3:cpu:/\n") is None
    total, used, cache = _memory(None, tmp_path)
    assert total == _machine_total() and 0 < used < total and cache > 0


@pytest.mark.parametrize(
    "broken",
    [{"memory.current": "lots\n"}, {"memory.stat": "file many\n"}, {"memory.max": "1.5\n"}],
)
def test_unreadable_group_falls_back_to_the_machine(tmp_path: Path, broken: dict[str, str]) -> None:
    mount = tmp_path / "cgroup"
    _files(mount, {"cgroup.controllers": "memory\n", **V2})
    cgroup = MemoryCgroup.find(mount, "0::/\n")
    _files(mount, broken)
    total, used, _ = _memory(cgroup, tmp_path)
    assert total == _machine_total()  # not the group's 256 MiB limit
    assert used != 30000000


def test_a_group_that_went_away_falls_back_to_the_machine(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    _files(mount, {"cgroup.controllers": "memory\n", **V2})
    cgroup = MemoryCgroup.find(mount, "0::/\n")
    (mount / "memory.current").unlink()
    assert _memory(cgroup, tmp_path)[0] == _machine_total()


# --- flags -----------------------------------------------------------------------------------


def _settings(argv: list[str]) -> Any:
    parser = argparse.ArgumentParser()
    command.register(parser)
    return command.settings_from_args(parser.parse_args(["--no-auth", *argv]))


def test_metrics_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = _settings([])
    assert (defaults.metrics_interval_s, defaults.metrics_max_samples) == (5.0, 720)
    given = _settings(["--metrics-interval", "0", "--metrics-max-samples", "3"])
    assert (given.metrics_interval_s, given.metrics_max_samples) == (0.0, 3)
    monkeypatch.setenv("AGENTCUBE_E2B_PICOD_METRICS_INTERVAL", "2.5")
    monkeypatch.setenv("AGENTCUBE_E2B_PICOD_METRICS_MAX_SAMPLES", "10")
    from_env = _settings([])
    assert (from_env.metrics_interval_s, from_env.metrics_max_samples) == (2.5, 10)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-interval", "-1"], "--metrics-interval: expected >= 0"),
        (["--metrics-interval", "soon"], "--metrics-interval: expected a number"),
        (["--metrics-interval", "nan"], "--metrics-interval: expected a finite number"),
        (["--metrics-interval", "inf"], "--metrics-interval: expected a finite number"),
        (["--metrics-max-samples", "0"], "--metrics-max-samples: expected >= 1"),
        (["--metrics-max-samples", "1.5"], "--metrics-max-samples: expected a number"),
    ],
)
def test_bad_metrics_flags(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(argv)


# --- a real picod ----------------------------------------------------------------------------


def _series(http: httpx.Client, picod: PicodProcess, query: str = "series=1") -> list[Any]:
    response = http.get(f"{picod.url}/metrics?{query}")
    assert response.status_code == 200, response.text
    samples = response.json()["samples"]
    assert isinstance(samples, list)
    return samples


def _until(
    picod: PicodProcess, http: httpx.Client, what: str, done: Callable[[list[Any]], bool]
) -> list[Any]:
    """Poll picod's whole series until `done` holds for it (a real process keeps the time)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        samples = _series(http, picod)
        if done(samples):
            return samples
        time.sleep(0.05)
    raise AssertionError(f"waited {WAIT_S} s for {what}")


def test_picod_keeps_a_capped_series(
    start_picod: Callable[..., PicodProcess], http: httpx.Client
) -> None:
    picod = start_picod(no_auth=True, metrics_interval=0.1, metrics_max_samples=3)
    full = _until(picod, http, "3 samples", lambda s: len(s) == 3)
    assert all(list(sample) == list(KEYS) for sample in full)
    # it keeps sampling, dropping the oldest: still 3, and newer ones
    later = _until(picod, http, "a newer second", lambda s: s[-1]["ts"] > full[-1]["ts"])
    assert len(later) == 3
    assert [s["ts"] for s in later] == sorted(s["ts"] for s in later)
    # without a query: the single sample of today, taken now
    single = http.get(f"{picod.url}/metrics").json()
    assert list(single) == list(KEYS) and single["ts"] >= later[-1]["ts"]
    assert list(http.get(f"{picod.url}/metrics?series=0").json()) == list(KEYS)


def test_picod_windows_are_inclusive_at_whole_seconds(
    start_picod: Callable[..., PicodProcess], http: httpx.Client
) -> None:
    picod = start_picod(no_auth=True, metrics_interval=0.25, metrics_max_samples=200)
    full = _until(picod, http, "3 seconds of samples", lambda s: len({x["ts"] for x in s}) >= 3)
    second = sorted({s["ts"] for s in full})[1]  # complete, and not about to drop off
    expected = [s for s in full if s["ts"] == second]
    assert expected and _series(http, picod, f"start={second}&end={second}") == expected
    assert _series(http, picod, f"end={second}") == [s for s in full if s["ts"] <= second]
    after = _series(http, picod, f"start={second + 1}")
    newer = [s for s in full if s["ts"] > second]
    assert all(s["ts"] > second for s in after) and after[: len(newer)] == newer
    assert _series(http, picod, f"start={int(time.time()) + 3600}") == []


@pytest.mark.parametrize(
    "query", ["start=x", "end=", "start=2&end=1", "start=9223372036854775808", "series=maybe"]
)
def test_picod_refuses_bad_windows(
    picod_sdk_env: PicodProcess, http: httpx.Client, query: str
) -> None:
    response = http.get(f"{picod_sdk_env.url}/metrics?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 400 and isinstance(body["message"], str) and body["message"]


def test_picod_without_sampling_answers_one_sample(
    start_picod: Callable[..., PicodProcess], http: httpx.Client
) -> None:
    picod = start_picod(no_auth=True, metrics_interval=0)
    before = int(time.time())
    (sample,) = _series(http, picod)
    assert list(sample) == list(KEYS) and sample["ts"] >= before
    assert _series(http, picod, f"end={before - 3600}") == []


# --- the lifecycle service's client ----------------------------------------------------------


@pytest.fixture(scope="module")
def router_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def guarded_picod(
    start_picod: Callable[..., PicodProcess], router_key: rsa.RSAPrivateKey, tmp_path: Path
) -> PicodProcess:
    """A picod bound to SANDBOX that wants the router's JWT and the access token."""
    public = tmp_path / "public.pem"
    public.write_bytes(
        router_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return start_picod(jwt_public_key=public, access_token=TOKEN, sandbox_id=SANDBOX,
                       metrics_interval=0.2)  # fmt: skip


async def test_client_reads_the_series(
    guarded_picod: PicodProcess, router_key: rsa.RSAPrivateKey
) -> None:
    client = PicodClient(scheme="http", port=guarded_picod.port)
    client.use_identity(_pem(router_key))
    try:
        deadline = time.monotonic() + WAIT_S
        samples = await client.metrics("127.0.0.1", SANDBOX, TOKEN)
        while len({s["ts"] for s in samples}) < 2 and time.monotonic() < deadline:
            samples = await client.metrics("127.0.0.1", SANDBOX, TOKEN)
        assert len({s["ts"] for s in samples}) >= 2, samples
        assert all(list(s) == list(KEYS) for s in samples)
        first = samples[0]["ts"]
        only_first = await client.metrics("127.0.0.1", SANDBOX, TOKEN, first, first)
        assert only_first and {s["ts"] for s in only_first} == {first}
        later = await client.metrics("127.0.0.1", SANDBOX, TOKEN, start=first + 1)
        assert later and all(s["ts"] > first for s in later)
        with pytest.raises(Unavailable, match="picod /metrics failed"):
            await client.metrics("127.0.0.1", SANDBOX, "wrong-token")
        with pytest.raises(Unavailable, match="picod /metrics failed"):
            await client.metrics("127.0.0.1", "sbxother", TOKEN)  # a JWT for another sandbox
    finally:
        await client.close()


class _OldPicod(BaseHTTPRequestHandler):
    """GET /metrics as picod answered it before the series: one object, query ignored."""

    answer: Any = None
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def old_picod() -> Iterator[tuple[ThreadingHTTPServer, type[_OldPicod]]]:
    handler = type("Handler", (_OldPicod,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="old-picod", daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"ts": 5, "cpu_count": 1}, [{"ts": 5, "cpu_count": 1}]),  # an older picod
        ({"samples": []}, []),
        ({"samples": [{"ts": 1}, {"ts": 2}]}, [{"ts": 1}, {"ts": 2}]),
        ([{"ts": 5}], Unavailable),
        ({"samples": {"ts": 1}}, Unavailable),
        ({"samples": [1, 2]}, Unavailable),
        ("nothing", Unavailable),
    ],
)
async def test_client_shapes(
    old_picod: tuple[ThreadingHTTPServer, type[_OldPicod]], answer: Any, expected: Any
) -> None:
    server, handler = old_picod
    handler.answer = answer
    client = PicodClient(scheme="http", port=server.server_address[1])
    try:
        if expected is Unavailable:
            with pytest.raises(Unavailable, match="answered no samples"):
                await client.metrics("127.0.0.1", SANDBOX, TOKEN, 1, 9)
        else:
            assert await client.metrics("127.0.0.1", SANDBOX, TOKEN, 1, 9) == expected
    finally:
        await client.close()
    assert handler.paths == ["/metrics?series=1&start=1&end=9"]
