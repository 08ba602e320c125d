"""Quotas at the edge: the per-key request rate, and the namespace's limits on CreateSandbox."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from extproc.core import errors
from extproc.core.api_keys import hash_api_key
from extproc.core.quotas import parse_quotas
from extproc.edge.platform import PlatformApi, PlatformRequest
from extproc.edge.rest_wire import error_answer, from_grpc
from extproc.edge.server import Edge
from extproc.lifecycle.status import to_status

from .conftest import KEY_A, KEY_B
from .fake_lifecycle import FakeLifecycle
from .test_platform import call


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _get(key: str, tenant: str) -> PlatformRequest:
    return PlatformRequest("GET", "/nope", {"x-api-key": key}, b"", tenant)


async def test_requests_per_second_per_api_key() -> None:
    clock = Clock()
    table = parse_quotas(json.dumps({"team-a": {"requestsPerSecond": 2}}))
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:  # never called
        api = PlatformApi(channel, "e2b.test", quotas=lambda: table, clock=clock)
        statuses = [(await api.handle(_get(KEY_A, "team-a")))[1].status for _ in range(3)]
        assert statuses == [404, 404, 429]  # 404: no such route, answered after the limit
        operation, answer = await api.handle(_get(KEY_A, "team-a"))
        assert operation == "rate_limited" and answer.status == 429
        assert dict(answer.headers)["retry-after"] == "1"
        body = json.loads(answer.body)
        assert body["code"] == 429 and "requestsPerSecond" in body["message"]
        assert "team-a" in body["message"] and KEY_A not in body["message"]
        # Another key, even in the same namespace, has its own bucket.
        assert (await api.handle(_get(KEY_B, "team-a")))[1].status == 404
        # The default namespace keeps the generous built-in rate.
        other = [(await api.handle(_get("e2b_" + "e" * 40, "default")))[1] for _ in range(50)]
        assert {a.status for a in other} == {404}
        clock.now += 0.5  # one token back at 2 per second
        assert (await api.handle(_get(KEY_A, "team-a")))[1].status == 404
        assert (await api.handle(_get(KEY_A, "team-a")))[1].status == 429


async def test_create_carries_the_namespace_quota(
    edge: Edge, channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str], tmp_path: Path
) -> None:
    config_file = tmp_path / "keys" / "e2b-api-key-config.json"
    config = json.loads(config_file.read_text())
    config["data"]["quotas"] = json.dumps(
        {"default": {"createsPerMinute": 7}, "team-b": {"maxSandboxes": 3}}
    )
    config_file.write_text(json.dumps(config))
    assert edge.keys.reload_if_changed()
    for tenant, expected in (("team-b", (3, 7)), ("default", (0, 7))):
        reply = await call(channel, "POST", "/sandboxes", {"templateID": "base"}, tenant=tenant)
        assert reply.status == 201
        create = [r for name, r in fake[0].calls if name == "CreateSandbox"][-1]
        assert (create.quota.max_sandboxes, create.quota.creates_per_minute) == expected
    assert hash_api_key(KEY_B) in config["data"]  # the keys are untouched


@pytest.mark.parametrize(
    "message",
    [
        "quota exceeded: namespace 'team-a' may have at most 2 running or paused sandboxes",
        "rate limit exceeded: namespace 'team-a' may create at most 1 sandboxes per minute",
    ],
)
def test_lifecycle_quota_errors_become_e2b_429(message: str) -> None:
    code, details = to_status(errors.ResourceExhausted(message))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    rpc_error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
    answer = error_answer(from_grpc(rpc_error), retryable=False)
    assert answer.status == 429
    assert json.loads(answer.body) == {"code": 429, "message": message}
