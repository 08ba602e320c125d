"""E2B semantics the SDK relies on, through `up` and the real SDK (issue 12): idempotent
remove, metadata that follows E2B's overwrite rule, inclusive list bounds and the metric
series."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from e2b import Sandbox, SandboxQuery

from support.gateway import Gateway


@pytest.fixture
def sandbox(gateway: Gateway) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=120, metadata={"suite": "parity"})
    try:
        yield sbx
    finally:
        sbx.kill()


def test_remove_is_idempotent(sandbox: Sandbox) -> None:
    sandbox.files.write("gone.txt", "x")
    sandbox.files.remove("gone.txt")
    sandbox.files.remove("gone.txt")  # E2B's envd: no error for a missing path
    sandbox.files.remove("never/was/here")
    assert not sandbox.files.exists("gone.txt")


def test_an_overwrite_keeps_only_the_metadata_sent_with_it(sandbox: Sandbox) -> None:
    sandbox.files.write("tagged.txt", "v1", metadata={"owner": "a"})
    assert sandbox.files.get_info("tagged.txt").metadata == {"owner": "a"}
    sandbox.files.write("tagged.txt", "v2")
    assert not sandbox.files.get_info("tagged.txt").metadata
    assert sandbox.files.read("tagged.txt") == "v2"


def test_list_bounds_include_the_sandbox_they_were_copied_from(sandbox: Sandbox) -> None:
    started = sandbox.get_info().started_at
    query = SandboxQuery(metadata={"suite": "parity"}, started_after=started)
    listed = {info.sandbox_id for info in Sandbox.list(query=query).next_items()}
    assert sandbox.sandbox_id in listed
    later = SandboxQuery(metadata={"suite": "parity"}, started_after=started + timedelta(0, 1))
    assert sandbox.sandbox_id not in {i.sandbox_id for i in Sandbox.list(query=later).next_items()}


def test_metrics_are_a_series_with_real_page_cache(gateway: Gateway, sandbox: Sandbox) -> None:
    sandbox.commands.run("head -c 20000000 /dev/urandom > cached && cat cached > /dev/null")
    deadline = time.monotonic() + 30
    metrics = sandbox.get_metrics()
    while len(metrics) < 2 and time.monotonic() < deadline:  # a sample every 5 s
        time.sleep(1)
        metrics = sandbox.get_metrics()
    assert len(metrics) >= 2
    stamps = [m.timestamp for m in metrics]
    assert stamps == sorted(stamps)
    assert metrics[-1].mem_cache > 0  # the sandbox's cgroup page cache, not 0
    last = metrics[-1].timestamp
    window = sandbox.get_metrics(start=last, end=last)  # inclusive at whole seconds
    # every sample of that second (a sandbox's first sample and a sweep may share one)
    same_second = [
        m.timestamp for m in metrics if int(m.timestamp.timestamp()) == int(last.timestamp())
    ]
    assert [m.timestamp for m in window] == same_second
