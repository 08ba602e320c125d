"""Bad inputs, the error table, templates and WatchSandboxes."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core import errors
from extproc.lifecycle.status import CODES, DEFAULT, DEFAULT_DOMAIN, to_status

from .conftest import Client


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
    for bad_id, code in [("UPPER-case", grpc.StatusCode.INVALID_ARGUMENT),
                         ("a" * 20, grpc.StatusCode.NOT_FOUND)]:  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lifecycle.sandboxes.GetSandbox(
                pb.GetSandboxRequest(sandbox_id=bad_id, tenant="t")
            )
        assert info.value.code() == code
    for token in ["%%%", "bm90LWpzb24", "eyJ0IjogMX0"]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lifecycle.sandboxes.ListSandboxes(
                pb.ListSandboxesRequest(tenant="t", page_token=token)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page token" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.KillSandbox(pb.KillSandboxRequest(sandbox_id="a" * 20))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_templates(lifecycle: Client) -> None:
    t = lifecycle.templates
    listed = await t.ListTemplates(pb.ListTemplatesRequest(tenant="t"))
    names = {x.template_id for x in listed.templates}
    assert {"base", "code-interpreter-v1"} <= names
    base = (await t.GetTemplate(pb.GetTemplateRequest(template_id="base"))).template
    assert (base.cpu_count, base.memory_mb) == (2, 512) and base.disk_size_mb > 0
    alias = (await t.GetTemplate(pb.GetTemplateRequest(template_id="code-interpreter"))).template
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
    streams = [lifecycle.sandboxes.WatchSandboxes(pb.WatchSandboxesRequest()) for _ in range(2)]
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
