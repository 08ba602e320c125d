"""network.allowPublicTraffic: the flag and the traffic token through the lifecycle service.

The token is derived, never stored (core/tokens.py); the flag is one column of the store,
added to a database from before it with every old sandbox public.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.tokens import traffic_access_token
from extproc.lifecycle.sandboxes import Sandbox, State
from extproc.lifecycle.store import Row, Store

from .conftest import Client

TENANT = "team-traffic"


def _sandbox(sandbox_id: str, token: str = "", public: bool = True) -> Sandbox:
    return Sandbox(
        sandbox_id=sandbox_id, template_id="base", alias="", tenant=TENANT, metadata={},
        env_vars={}, started_at=1.0, end_at=2.0, state=State.RUNNING, cpu_count=1,
        memory_mb=512, disk_size_mb=1024, envd_version="0.6.13", envd_access_token=token,
        endpoint_host="10.213.0.2", allow_public_traffic=public,
    )  # fmt: skip


def _flags(rows: list[Row]) -> dict[str, bool]:
    return {r.sandbox.sandbox_id: r.sandbox.allow_public_traffic for r in rows}


def test_the_token_exists_only_without_public_traffic() -> None:
    public = _sandbox("sbxpublic", token="tok")
    assert public.allow_public_traffic and public.traffic_access_token == ""
    private = replace(public, allow_public_traffic=False)
    assert private.traffic_access_token == traffic_access_token("tok", "sbxpublic") != ""
    # Nothing to derive it from: no token, so no request can match one.
    assert replace(private, envd_access_token="").traffic_access_token == ""


async def test_the_flag_round_trips_through_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    await store.open(prune_before=0.0)
    try:
        await store.put(Row(_sandbox("sbxprivate", public=False), 1, 1, False))
        await store.put(Row(_sandbox("sbxpublic"), 2, 2, False))
    finally:
        await store.close()
    store = Store(tmp_path / "db.sqlite3")
    await store.open(prune_before=0.0)
    try:
        flags = _flags(await store.load_live())
    finally:
        await store.close()
    assert flags == {"sbxprivate": False, "sbxpublic": True}


async def test_a_database_from_before_the_column_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = Store(path)
    await store.open(prune_before=0.0)
    try:
        await store.put(Row(_sandbox("sbxold"), 1, 1, False))
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE sandboxes DROP COLUMN allow_public_traffic")
    conn.commit()
    conn.close()

    store = Store(path)
    await store.open(prune_before=0.0)
    try:
        rows = await store.load_live()
        await store.put(Row(_sandbox("sbxnew", public=False), 2, 2, False))
        after = _flags(await store.load_live())
    finally:
        await store.close()
    assert [r.sandbox.allow_public_traffic for r in rows] == [True]
    assert after == {"sbxold": True, "sbxnew": False}


async def test_create_and_get_carry_the_flag_and_the_token(lifecycle: Client) -> None:
    created = (
        await lifecycle.sandboxes.CreateSandbox(
            pb.CreateSandboxRequest(tenant=TENANT, secure=True, allow_public_traffic=False)
        )
    ).sandbox
    assert created.HasField("allow_public_traffic") and not created.allow_public_traffic
    assert created.traffic_access_token == traffic_access_token(
        created.envd_access_token, created.sandbox_id
    )
    got = await lifecycle.sandboxes.GetSandbox(
        pb.GetSandboxRequest(sandbox_id=created.sandbox_id, tenant=TENANT)
    )
    assert got.sandbox.traffic_access_token == created.traffic_access_token
    assert not got.sandbox.allow_public_traffic

    public = (
        await lifecycle.sandboxes.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT, secure=True))
    ).sandbox
    assert public.HasField("allow_public_traffic") and public.allow_public_traffic
    assert public.traffic_access_token == ""
    for sandbox in (created, public):
        await lifecycle.sandboxes.KillSandbox(
            pb.KillSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
        )


async def test_no_public_traffic_needs_a_secure_sandbox(lifecycle: Client) -> None:
    request = pb.CreateSandboxRequest(tenant=TENANT, secure=False, allow_public_traffic=False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.CreateSandbox(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "secure" in info.value.details()
    assert not lifecycle.running.backend.live
