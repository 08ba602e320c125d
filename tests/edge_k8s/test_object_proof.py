"""extproc.k8s.object_proof: the HMAC, its checks, and the key Secret through the fake API;
and the join's bookkeeping of proven Sandboxes (no informers: the handlers called directly)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from extproc.k8s.directory import SandboxEndpoint, SandboxJoin, pod_facts, sandbox_facts
from extproc.k8s.object_proof import (
    DEFAULT_SECRET_NAME,
    KEY_LABELS,
    PROOF_ANNOTATION,
    SANDBOX_ID_LABEL,
    has_valid_proof,
    load_or_create_proof_key,
    load_proof_key,
    proof_of,
)
from extproc.k8s.resources import Resources
from support.kubeapi import FakeApi

from .conftest import NS

KEY = b"\x01" * 32


def sandbox_object(
    namespace: str = "team-a",
    name: str = "e2b-sbx1",
    sandbox_id: str = "sbx1",
    proof: Any = "",
    **annotations: str,
) -> dict[str, Any]:
    """A Sandbox; `proof` "" is the right one for these fields, None leaves it out."""
    if proof == "":
        proof = proof_of(KEY, namespace, name, sandbox_id)
    if proof is not None:
        annotations[PROOF_ANNOTATION] = proof
    return {
        "apiVersion": "agents.x-k8s.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "1",
            "labels": {SANDBOX_ID_LABEL: sandbox_id},
            "annotations": annotations,
        },
    }


# --- the proof ----------------------------------------------------------------------------


def test_proof_is_hmac_sha256_over_namespace_name_and_id() -> None:
    expected = hmac.new(KEY, b"team-a\ne2b-sbx1\nsbx1", hashlib.sha256).hexdigest()
    assert proof_of(KEY, "team-a", "e2b-sbx1", "sbx1") == expected
    assert has_valid_proof(KEY, sandbox_object())


@pytest.mark.parametrize(
    "changed",
    [
        {"namespace": "team-b"},  # the victim's proof on an object in another namespace
        {"name": "evil"},  # ... in the same namespace under another name
        {"sandbox_id": "sbx2"},  # ... for another id
    ],
)
def test_a_copied_proof_fails_on_any_other_object(changed: dict[str, str]) -> None:
    copied = proof_of(KEY, "team-a", "e2b-sbx1", "sbx1")
    assert not has_valid_proof(KEY, sandbox_object(proof=copied, **changed))


@pytest.mark.parametrize(
    "obj",
    [
        sandbox_object(proof=None),
        {"metadata": {"name": "e2b-sbx1",  # no namespace: proves nothing
                      "labels": {SANDBOX_ID_LABEL: "sbx1"},
                      "annotations": {PROOF_ANNOTATION: proof_of(KEY, "", "e2b-sbx1", "sbx1")}}},
        sandbox_object(proof=proof_of(b"\x02" * 32, "team-a", "e2b-sbx1", "sbx1")),
        sandbox_object(proof=proof_of(KEY, "team-a", "e2b-sbx1", "sbx1").upper()),
        sandbox_object(proof="caf\u00e9"),
        sandbox_object(proof=12345),
        sandbox_object(sandbox_id=""),
        {"metadata": "not a mapping"},
        {},
    ],
)  # fmt: skip
def test_missing_or_malformed_proofs_are_invalid(obj: dict[str, Any]) -> None:
    assert not has_valid_proof(KEY, obj)


def test_an_empty_key_proves_nothing() -> None:
    obj = sandbox_object(proof=proof_of(b"", "team-a", "e2b-sbx1", "sbx1"))
    assert not has_valid_proof(b"", obj)


# --- the key Secret -------------------------------------------------------------------------


@pytest.fixture
async def resources(api: FakeApi) -> AsyncIterator[Resources]:
    client = ApiClient(Configuration(host=api.url))
    resources = Resources(client)
    yield resources
    resources.close()
    client.close()


async def test_the_lifecycle_creates_the_key_once_and_racers_converge(
    api: FakeApi, resources: Resources
) -> None:
    keys = await asyncio.gather(
        *(load_or_create_proof_key(resources, NS, DEFAULT_SECRET_NAME) for _ in range(4))
    )
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    stored = api.get("secrets", NS, DEFAULT_SECRET_NAME)
    assert stored is not None
    assert base64.b64decode(stored["data"]["key"]) == keys[0]
    assert stored["metadata"]["labels"] == KEY_LABELS
    assert await load_or_create_proof_key(resources, NS, DEFAULT_SECRET_NAME) == keys[0]
    # The edge reads the same key, never writes.
    writes = len(api.writes("secrets"))
    assert await load_proof_key(resources, NS, DEFAULT_SECRET_NAME) == keys[0]
    assert len(api.writes("secrets")) == writes


async def test_the_edge_says_what_to_do_when_the_key_is_absent(
    api: FakeApi, resources: Resources
) -> None:
    with pytest.raises(ValueError, match="lifecycle service creates it") as raised:
        await load_proof_key(resources, NS, DEFAULT_SECRET_NAME)
    assert f"Secret {NS}/{DEFAULT_SECRET_NAME}" in str(raised.value)
    assert api.writes("secrets") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "has no data key 'key'"),
        ({"key": "!!!"}, "'key' is not base64"),
        ({"key": base64.b64encode(b"short").decode()}, "shorter than 16 bytes"),
    ],
)
async def test_an_unusable_key_secret_is_refused(
    api: FakeApi, resources: Resources, data: dict[str, str], message: str
) -> None:
    api.put(
        "secrets",
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": DEFAULT_SECRET_NAME, "namespace": NS}, "data": data},
    )  # fmt: skip
    for load in (load_proof_key, load_or_create_proof_key):
        with pytest.raises(ValueError, match=message):
            await load(resources, NS, DEFAULT_SECRET_NAME)


# --- the join -----------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.routes: dict[str, SandboxEndpoint] = {}
        self.events: list[tuple[str, str]] = []

    def put(self, endpoint: SandboxEndpoint) -> None:
        self.routes[endpoint.sandbox_id] = endpoint
        self.events.append(("put", endpoint.sandbox_id))

    def gone(self, sandbox_id: str) -> None:
        del self.routes[sandbox_id]
        self.events.append(("gone", sandbox_id))


def ready_pod(name: str, ip: str, namespace: str = "team-a", sandbox_id: str = "sbx1") -> Any:
    return pod_facts({
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {SANDBOX_ID_LABEL: sandbox_id}},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    })  # fmt: skip


def test_the_join_publishes_only_proven_sandboxes_with_their_named_pod() -> None:
    sink = Sink()
    join = SandboxJoin(sink)
    join.sandbox_changed(sandbox_facts(KEY, sandbox_object(proof=None)), True)
    assert sink.events == []  # unproven: nothing at all
    join.pod_changed(ready_pod("e2b-sbx1", "10.0.0.1"), True)
    assert sink.events == []
    join.sandbox_changed(sandbox_facts(KEY, sandbox_object()), True)
    assert sink.routes["sbx1"].pod_ip == "10.0.0.1"


def test_a_delete_event_without_the_label_still_removes_the_claim() -> None:
    # A Sandbox that stops matching the label selector is DELETED with its new labels.
    sink = Sink()
    join = SandboxJoin(sink)
    join.sandbox_changed(sandbox_facts(KEY, sandbox_object()), True)
    unlabelled = sandbox_object()
    unlabelled["metadata"]["labels"] = {}
    join.sandbox_changed(sandbox_facts(KEY, unlabelled), False)
    assert sink.events == [("put", "sbx1"), ("gone", "sbx1")]


def test_paused_and_auto_resume_come_from_the_annotations() -> None:
    sink = Sink()
    join = SandboxJoin(sink)
    join.pod_changed(ready_pod("e2b-sbx1", "10.0.0.1"), True)
    obj = sandbox_object(**{"e2b.agentcube.io/state": "paused",
                            "e2b.agentcube.io/auto-resume": "true"})  # fmt: skip
    join.sandbox_changed(sandbox_facts(KEY, obj), True)
    endpoint = sink.routes["sbx1"]
    assert (endpoint.paused, endpoint.auto_resume, endpoint.pod_ip) == (True, True, "")
    obj = sandbox_object(**{"e2b.agentcube.io/state": "running",
                            "e2b.agentcube.io/auto-resume": "yes"})  # fmt: skip
    join.sandbox_changed(sandbox_facts(KEY, obj), True)
    endpoint = sink.routes["sbx1"]
    assert (endpoint.paused, endpoint.auto_resume, endpoint.pod_ip) == (False, False, "10.0.0.1")


def test_unproven_sandboxes_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    join = SandboxJoin(Sink())
    attacker = sandbox_facts(KEY, sandbox_object(namespace="team-b", proof=None))
    with caplog.at_level("INFO", logger="extproc.k8s.directory"):
        for _ in range(3):
            join.sandbox_changed(attacker, True)
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring Sandbox team-b/e2b-sbx1: it carries sandbox id sbx1 without the gateway's proof"
    ]
