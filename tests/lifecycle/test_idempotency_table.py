"""lifecycle/idempotency.py over a fake backend: what a keyed Create answers, case by case
(the real backends: test_idempotency_and_quotas.py, tests/lifecycle_k8s/test_service.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from extproc.lifecycle.idempotency import IDEMPOTENCY_WINDOW_S, IdempotentCreates, RecordedKey
from extproc.lifecycle.sandboxes import CreateSpec, Sandbox, State


def sandbox(sandbox_id: str, tenant: str, at: float) -> Sandbox:
    return Sandbox(
        sandbox_id=sandbox_id, template_id="base", alias="", tenant=tenant, metadata={},
        env_vars={}, started_at=at, end_at=at + 60, state=State.RUNNING, cpu_count=1,
        memory_mb=512, disk_size_mb=0, envd_version="", envd_access_token="token",
        endpoint_host="",
    )  # fmt: skip


class FakeBackend:
    def __init__(self, recorded: list[RecordedKey] | None = None) -> None:
        self.now = 1_000_000.0
        self.made: dict[str, Sandbox] = {}
        self.count = 0
        self.recorded = recorded or []
        self.loads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    def clock(self) -> float:
        return self.now

    async def create(self, spec: CreateSpec) -> Sandbox:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.count += 1
        made = sandbox(f"sbx{self.count}", spec.tenant, self.now)
        self.made[made.sandbox_id] = made
        return made

    async def recorded_keys(self, since: float) -> list[RecordedKey]:
        self.loads += 1
        return [r for r in self.recorded if r[3] >= since]

    async def keyed_sandbox(self, sandbox_id: str) -> Sandbox | None:
        return self.made.get(sandbox_id)


def spec(tenant: str = "t", key: str = "k", **fields: object) -> CreateSpec:
    return CreateSpec(tenant=tenant, template="base", timeout_s=60, idempotency_key=key,
                      **fields)  # type: ignore[arg-type]  # fmt: skip


async def test_same_key_same_sandbox_whatever_the_body_and_per_tenant() -> None:
    backend = FakeBackend()
    creates = IdempotentCreates(backend)
    first = await creates.create(spec())
    assert await creates.create(spec(metadata={"other": "body"})) == first
    assert (await creates.create(spec(tenant="u"))).sandbox_id != first.sandbox_id
    assert (await creates.create(spec(key=""))).sandbox_id != first.sandbox_id  # no key
    assert (await creates.create(spec(key=""))).sandbox_id != first.sandbox_id
    assert len(backend.made) == 4 and backend.loads == 1  # recorded keys read once


async def test_an_ended_sandbox_is_answered_as_it_ended_and_a_forgotten_one_starts_anew() -> None:
    backend = FakeBackend()
    creates = IdempotentCreates(backend)
    first = await creates.create(spec())
    backend.made[first.sandbox_id] = replace(first, state=State.ENDED, end_reason="killed")
    assert (await creates.create(spec())).state is State.ENDED
    del backend.made[first.sandbox_id]  # the backend no longer knows it
    assert (await creates.create(spec())).sandbox_id != first.sandbox_id


async def test_keys_a_backend_recorded_count_and_expire_after_the_window() -> None:
    backend = FakeBackend(recorded=[("t", "k", "old", 1_000_000.0 - 10)])
    backend.made["old"] = sandbox("old", "t", 1_000_000.0 - 10)
    creates = IdempotentCreates(backend)
    assert (await creates.create(spec())).sandbox_id == "old"
    backend.now += IDEMPOTENCY_WINDOW_S
    fresh = await creates.create(spec())
    assert fresh.sandbox_id != "old" and len(creates) == 1  # the old key was pruned


async def test_concurrent_duplicates_make_one_sandbox_and_share_a_failure() -> None:
    backend = FakeBackend()
    creates = IdempotentCreates(backend)
    backend.gate.clear()
    backend.fail = RuntimeError("no room")
    calls = [asyncio.ensure_future(creates.create(spec())) for _ in range(3)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(creates) == 0  # a failed create records nothing: the retry may succeed
    backend.fail = None
    backend.gate.clear()
    calls = [asyncio.ensure_future(creates.create(spec())) for _ in range(3)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    made = await asyncio.gather(*calls)
    assert len({s.sandbox_id for s in made}) == 1 and len(backend.made) == 1


@pytest.mark.parametrize("key", ["", "k"])
async def test_errors_of_the_backend_pass_through(key: str) -> None:
    backend = FakeBackend()
    backend.fail = ValueError("bad template")
    with pytest.raises(ValueError, match="bad template"):
        await IdempotentCreates(backend).create(spec(key=key))
