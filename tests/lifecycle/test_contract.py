"""Bad inputs, the error table, templates, WatchSandboxes, caller tokens and tenant scope."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core import errors
from extproc.core.caller_token import ALL_TENANTS_METADATA, write_token_file
from extproc.lifecycle.command import caller_token, register, settings_from_args
from extproc.lifecycle.server import serving
from extproc.lifecycle.status import CODES, DEFAULT, DEFAULT_DOMAIN, to_status

from .conftest import Client, make_settings


@pytest.mark.parametrize(("error", "code"), list(CODES.items()))
def test_every_domain_error_has_a_status(error: type[errors.DomainError], code: object) -> None:
    assert to_status(error("why")) == (code, "why")


def test_unknown_errors_have_explicit_defaults() -> None:
    class Odd(errors.DomainError):
        pass

    assert to_status(Odd("x")) == (DEFAULT_DOMAIN, "x")
    assert to_status(ValueError("secret detail"))[0] == DEFAULT
    assert "secret" not in to_status(ValueError("secret detail"))[1]


BAD_CREATES = [
    ({"timeout_seconds": 0}, grpc.StatusCode.INVALID_ARGUMENT, "Timeout must be greater than 0"),
    ({"timeout_seconds": -5}, grpc.StatusCode.INVALID_ARGUMENT, "Timeout must be greater than 0"),
    ({"timeout_seconds": 3601}, grpc.StatusCode.INVALID_ARGUMENT,
     "Timeout cannot be greater than 1 hours"),
    ({"template_id": "nope"}, grpc.StatusCode.NOT_FOUND, "template 'nope' not found"),
    ({"metadata": {f"k{i}": "v" for i in range(65)}}, grpc.StatusCode.INVALID_ARGUMENT,
     "at most 64"),
    ({"metadata": {"k": "v" * 17000}}, grpc.StatusCode.INVALID_ARGUMENT, "at most 16384 bytes"),
    ({"env_vars": {"1BAD": "x"}}, grpc.StatusCode.INVALID_ARGUMENT, "invalid env var name"),
    ({"tenant": ""}, grpc.StatusCode.INVALID_ARGUMENT, "tenant is required"),
    ({"on_timeout": 9}, grpc.StatusCode.INVALID_ARGUMENT, "on_timeout"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "code", "message"), BAD_CREATES)
async def test_bad_creates(lifecycle: Client, fields: dict[str, object], code: object,
                           message: str) -> None:  # fmt: skip
    request = pb.CreateSandboxRequest(tenant="t")
    for key, value in fields.items():
        if isinstance(value, dict):
            getattr(request, key).update(value)
        else:
            setattr(request, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.CreateSandbox(request)
    assert info.value.code() == code
    assert message in info.value.details()
    assert not lifecycle.running.backend.live


async def test_bad_ids_and_page_tokens(lifecycle: Client) -> None:
    # E2B answers 404 for any id that names no sandbox, malformed or not.
    for bad_id in ("UPPER-case", "a" * 20, "x" * 10_000, "\x00../", ""):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lifecycle.sandboxes.GetSandbox(
                pb.GetSandboxRequest(sandbox_id=bad_id, tenant="t")
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(info.value.details()) < 200
    for token in ["%%%", "bm90LWpzb24", "eyJ0IjogMX0"]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lifecycle.sandboxes.ListSandboxes(
                pb.ListSandboxesRequest(tenant="t", page_token=token)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page token" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.KillSandbox(
            pb.KillSandboxRequest(sandbox_id="a" * 20, tenant="t")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_templates(lifecycle: Client) -> None:
    t = lifecycle.templates
    listed = await t.ListTemplates(pb.ListTemplatesRequest(tenant="t"))
    names = {x.template_id for x in listed.templates}
    assert {"base", "code-interpreter-v1"} <= names
    base = (await t.GetTemplate(pb.GetTemplateRequest(template_id="base", tenant="t"))).template
    assert (base.cpu_count, base.memory_mb) == (2, 512) and base.disk_size_mb > 0
    alias = (
        await t.GetTemplate(pb.GetTemplateRequest(template_id="code-interpreter", tenant="t"))
    ).template
    assert alias.template_id == "code-interpreter-v1"
    mine = pb.Template(template_id="small", aliases=["tiny"], memory_mb=256, public=False)
    created = await t.CreateTemplate(pb.CreateTemplateRequest(tenant="t", template=mine))
    assert created.template.tenant == "t"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await t.GetTemplate(pb.GetTemplateRequest(template_id="tiny", tenant="other"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await t.CreateTemplate(pb.CreateTemplateRequest(tenant="t", template=mine))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    bad = pb.Template(template_id="Bad Name")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await t.CreateTemplate(pb.CreateTemplateRequest(tenant="t", template=bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    updated = await t.UpdateTemplate(
        pb.UpdateTemplateRequest(tenant="t", template_id="small", public=True)
    )
    assert updated.template.public
    assert "small" in (lifecycle.running.backend.dir / "templates.json").read_text()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await t.DeleteTemplate(pb.DeleteTemplateRequest(tenant="t", template_id="base"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await t.DeleteTemplate(pb.DeleteTemplateRequest(tenant="t", template_id="small"))
    assert "small" not in (lifecycle.running.backend.dir / "templates.json").read_text()


async def test_watch_delivers_events_in_order(lifecycle: Client) -> None:
    existing = (await lifecycle.sandboxes.CreateSandbox(
        pb.CreateSandboxRequest(tenant="t"))).sandbox  # fmt: skip
    streams = [
        lifecycle.sandboxes.WatchSandboxes(
            pb.WatchSandboxesRequest(), metadata=ALL_TENANTS_METADATA
        )
        for _ in range(2)
    ]
    first = [await s.read() for s in streams]
    assert all(m.type == pb.SANDBOX_EVENT_TYPE_EXISTING for m in first)
    assert all(m.sandbox.sandbox_id == existing.sandbox_id for m in first)
    synced = [await s.read() for s in streams]
    assert all(m.type == pb.SANDBOX_EVENT_TYPE_SYNCED for m in synced)
    created = (await lifecycle.sandboxes.CreateSandbox(
        pb.CreateSandboxRequest(tenant="t", timeout_seconds=1))).sandbox  # fmt: skip
    await lifecycle.sandboxes.KillSandbox(
        pb.KillSandboxRequest(sandbox_id=existing.sandbox_id, tenant="t")
    )
    for stream in streams:
        events = [await asyncio.wait_for(stream.read(), 5) for _ in range(3)]
        assert [(e.type, e.sandbox.sandbox_id) for e in events] == [
            (pb.SANDBOX_EVENT_TYPE_CREATED, created.sandbox_id),
            (pb.SANDBOX_EVENT_TYPE_KILLED, existing.sandbox_id),
            (pb.SANDBOX_EVENT_TYPE_EXPIRED, created.sandbox_id),
        ]
        revisions = [e.revision for e in events]
        assert revisions == sorted(revisions) and len(set(revisions)) == 3
        assert events[2].sandbox.state == pb.SANDBOX_STATE_ENDED
        stream.cancel()


# --- an empty tenant: every tenant, for a caller that says so ------------------------------


def _tenanted_methods() -> list[tuple[str, str, type[Any]]]:
    """(stub, method, request class) of every unary RPC whose request names a tenant."""
    found = []
    for service, stub in (("SandboxService", "sandboxes"), ("TemplateService", "templates")):
        for method in pb.DESCRIPTOR.services_by_name[service].methods:
            if not method.server_streaming and "tenant" in method.input_type.fields_by_name:
                found.append((stub, method.name, getattr(pb, method.input_type.name)))
    return found


@pytest.mark.parametrize(("stub", "method", "request_class"), _tenanted_methods())
async def test_an_empty_tenant_without_the_all_tenants_scope_is_invalid(
    lifecycle: Client, stub: str, method: str, request_class: type[Any]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(getattr(lifecycle, stub), method)(request_class())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-agentcube-e2b-scope: all-tenants" in info.value.details()


async def test_watching_covers_every_tenant_so_it_needs_the_scope(lifecycle: Client) -> None:
    refused = lifecycle.sandboxes.WatchSandboxes(pb.WatchSandboxesRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await refused.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    scoped = lifecycle.sandboxes.WatchSandboxes(
        pb.WatchSandboxesRequest(), metadata=ALL_TENANTS_METADATA
    )
    assert (await scoped.read()).type == pb.SANDBOX_EVENT_TYPE_SYNCED
    scoped.cancel()


async def test_the_all_tenants_scope_makes_an_empty_tenant_every_tenant(lifecycle: Client) -> None:
    t = lifecycle.templates
    private = pb.Template(template_id="private-one", public=False)
    await t.CreateTemplate(pb.CreateTemplateRequest(tenant="t", template=private))
    everyone = await t.ListTemplates(pb.ListTemplatesRequest(), metadata=ALL_TENANTS_METADATA)
    assert "private-one" in {x.template_id for x in everyone.templates}
    other = await t.ListTemplates(pb.ListTemplatesRequest(tenant="other"))
    assert "private-one" not in {x.template_id for x in other.templates}
    with pytest.raises(grpc.aio.AioRpcError) as info:  # past the gate: the backend answers
        await lifecycle.sandboxes.GetSandbox(
            pb.GetSandboxRequest(sandbox_id="a" * 20), metadata=ALL_TENANTS_METADATA
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# --- the caller token -----------------------------------------------------------------------

TOKEN = "0f" * 32


@pytest.fixture
async def authenticated(tmp_path: Path) -> AsyncIterator[tuple[Path, grpc.aio.Channel]]:
    """The lifecycle service as `up` runs it: a unix socket in a 0700 directory, a token."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    socket = run / "lifecycle.sock"
    settings = make_settings(tmp_path / "state")
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, listen=f"unix:{socket}")
    )
    async with (
        serving(settings, caller_token=TOKEN),
        grpc.aio.insecure_channel(f"unix:{socket}") as channel,
    ):
        yield socket, channel


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize(
    "metadata",
    [(), _bearer("wrong"), _bearer(TOKEN.upper()), (("authorization", TOKEN),)],
    ids=["none", "wrong", "case", "no-bearer"],
)
async def test_calls_without_the_caller_token_are_unauthenticated(
    authenticated: tuple[Path, grpc.aio.Channel], metadata: tuple[tuple[str, str], ...]
) -> None:
    _, channel = authenticated
    templates = pb_grpc.TemplateServiceStub(channel)
    sandboxes = pb_grpc.SandboxServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await templates.ListTemplates(pb.ListTemplatesRequest(tenant="t"), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    watch = sandboxes.WatchSandboxes(
        pb.WatchSandboxesRequest(), metadata=(*metadata, *ALL_TENANTS_METADATA)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_caller_token_opens_every_rpc_and_health_needs_none(
    authenticated: tuple[Path, grpc.aio.Channel],
) -> None:
    socket, channel = authenticated
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    templates = pb_grpc.TemplateServiceStub(channel)
    listed = await templates.ListTemplates(
        pb.ListTemplatesRequest(tenant="t"), metadata=_bearer(TOKEN)
    )
    assert listed.templates
    sandboxes = pb_grpc.SandboxServiceStub(channel)
    unscoped = sandboxes.WatchSandboxes(pb.WatchSandboxesRequest(), metadata=_bearer(TOKEN))
    with pytest.raises(grpc.aio.AioRpcError) as info:  # authenticated is not all tenants
        await unscoped.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    watch = sandboxes.WatchSandboxes(
        pb.WatchSandboxesRequest(), metadata=(*_bearer(TOKEN), *ALL_TENANTS_METADATA)
    )
    assert (await watch.read()).type == pb.SANDBOX_EVENT_TYPE_SYNCED
    watch.cancel()


def test_the_command_takes_a_unix_socket_and_a_caller_token_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser)
    token_file = tmp_path / "lifecycle-token"
    write_token_file(token_file, TOKEN)
    args = parser.parse_args(
        ["--listen", f"unix:{tmp_path}/lifecycle.sock", "--caller-token-file", str(token_file)]
    )
    assert settings_from_args(args).server.listen == f"unix:{tmp_path}/lifecycle.sock"
    assert caller_token(args) == TOKEN
    assert caller_token(parser.parse_args([])) is None  # Kubernetes mode: the network decides
    token_file.chmod(0o640)
    with pytest.raises(ValueError, match=r"--caller-token-file: .* readable by other users"):
        caller_token(args)
    with pytest.raises(ValueError, match="--listen: expected unix:/PATH or HOST:PORT"):
        settings_from_args(parser.parse_args(["--listen", "9002"]))
