"""Creates and patches through the official client are checked as a real API server checks
them: unknown fields (Strict 400, else pruned with a Warning), the schema (422), defaults,
apiVersion/kind, ObjectMeta, and the built-in kinds' rules."""

from __future__ import annotations

import base64
from typing import Any

from k8s_fake.conftest import (
    AGENTCUBE,
    NS,
    SANDBOX_GROUP,
    Cluster,
    code_interpreter,
    sandbox,
)

SANDBOXES = (SANDBOX_GROUP, "v1alpha1", "sandboxes")
STRICT = {"field_validation": "Strict"}


async def test_strict_create_names_the_unknown_field_and_stores_nothing(v046: Cluster) -> None:
    body = sandbox("box", lifecycle={"shutdownTime": "2026-01-01T00:00:00Z"})
    reply = await v046.create(*SANDBOXES, body, **STRICT)
    assert reply.status == 400
    assert reply.body["reason"] == "BadRequest"
    assert reply.body["message"] == (
        'Sandbox in version "v1alpha1" cannot be handled as a Sandbox: strict decoding error: '
        'unknown field "spec.lifecycle"'
    )
    assert v046.api.objects["sandboxes"] == {}
    assert v046.api.writes("sandboxes")[0].params == {"fieldValidation": "Strict"}


async def test_strict_patch_names_every_unknown_field(v046: Cluster) -> None:
    assert (await v046.create(*SANDBOXES, sandbox("box"))).status == 201
    patch = {
        "spec": {
            "lifecycle": {"shutdownTime": "x"},
            "podTemplate": {
                "spec": {
                    "containers": [
                        {"name": "main", "image": "i", "env": [{"name": "A", "valeu": "typo"}]}
                    ]
                }
            },
        }
    }
    reply = await v046.patch(*SANDBOXES, "box", patch, **STRICT)
    assert (reply.status, reply.body["message"]) == (
        400,
        (
            'strict decoding error: unknown field "spec.lifecycle", '
            'unknown field "spec.podTemplate.spec.containers[0].env[0].valeu"'
        ),
    )
    stored = v046.api.get("sandboxes", NS, "box")
    assert stored is not None and "lifecycle" not in stored["spec"]


async def test_by_default_unknown_fields_are_dropped_with_a_warning(v046: Cluster) -> None:
    reply = await v046.create(*SANDBOXES, sandbox("box", lifecycle={"shutdownTime": "x"}))
    assert reply.status == 201
    assert reply.warnings == ['unknown field "spec.lifecycle"']
    assert "lifecycle" not in reply.body["spec"]
    stored = v046.api.get("sandboxes", NS, "box")
    assert stored is not None and "lifecycle" not in stored["spec"]
    patched = await v046.patch(*SANDBOXES, "box", {"metadata": {"labelz": {"a": "b"}}})
    assert (patched.status, patched.warnings) == (200, ['unknown field "metadata.labelz"'])
    # The next, clean response carries no stale Warning.
    assert (await v046.get(*SANDBOXES, "box")).warnings == []
    ignored = await v046.create(*SANDBOXES, sandbox("quiet", x=1), field_validation="Ignore")
    assert (ignored.status, ignored.warnings, "x" in ignored.body["spec"]) == (201, [], False)


async def test_a_missing_required_field_is_422_with_causes(v046: Cluster) -> None:
    body = sandbox("box")
    del body["spec"]["podTemplate"]["metadata"]
    body["spec"]["podTemplate"]["spec"]["containers"][0].pop("name")
    reply = await v046.create(*SANDBOXES, body, **STRICT)
    assert (reply.status, reply.body["reason"]) == (422, "Invalid")
    assert reply.causes == [
        ("spec.podTemplate.metadata", "FieldValueRequired"),
        ("spec.podTemplate.spec.containers[0].name", "FieldValueRequired"),
    ]
    assert reply.body["message"].startswith('Sandbox.agents.x-k8s.io "box" is invalid: [')
    assert reply.body["details"]["group"] == SANDBOX_GROUP
    assert v046.api.objects["sandboxes"] == {}


async def test_enum_bounds_and_date_time_are_enforced_on_patches_too(v046: Cluster) -> None:
    assert (await v046.create(*SANDBOXES, sandbox("box"))).status == 201
    bad = {"spec": {"shutdownPolicy": "Never", "replicas": 2, "shutdownTime": "in an hour"}}
    reply = await v046.patch(*SANDBOXES, "box", bad, **STRICT)
    assert reply.status == 422
    assert sorted(reply.causes) == [
        ("spec.replicas", "FieldValueInvalid"),
        ("spec.shutdownPolicy", "FieldValueNotSupported"),
        ("spec.shutdownTime", "FieldValueInvalid"),
    ]
    good = {
        "spec": {"shutdownPolicy": "Delete", "replicas": 0, "shutdownTime": "2026-01-01T00:00:00Z"}
    }
    assert (await v046.patch(*SANDBOXES, "box", good, **STRICT)).status == 200


async def test_defaults_are_applied(v046: Cluster) -> None:
    created = await v046.create(*SANDBOXES, sandbox("box"), **STRICT)
    assert created.body["spec"]["shutdownPolicy"] == "Retain"
    reply = await v046.create(AGENTCUBE, "v1alpha1", "codeinterpreters", code_interpreter("ci"))
    assert reply.status == 201
    spec = reply.body["spec"]
    assert (spec["authMode"], spec["sessionTimeout"], spec["maxSessionDuration"]) == (
        "picod",
        "15m",
        "8h",
    )
    stored = v046.api.get("codeinterpreters", NS, "ci")
    assert stored is not None and stored["spec"]["authMode"] == "picod"
    none = await v046.create(
        AGENTCUBE, "v1alpha1", "codeinterpreters", code_interpreter("open", authMode="none")
    )
    assert none.body["spec"]["authMode"] == "none"
    wrong = await v046.create(
        AGENTCUBE,
        "v1alpha1",
        "codeinterpreters",
        code_interpreter("bad", authMode="jwt", ports=[{"name": "x"}]),
    )
    assert sorted(wrong.causes) == [
        ("spec.authMode", "FieldValueNotSupported"),
        ("spec.ports[0].port", "FieldValueRequired"),
    ]


async def test_api_version_and_kind_must_match_the_url(v046: Cluster) -> None:
    wrong_version = dict(sandbox("box"), apiVersion="agents.x-k8s.io/v1beta1")
    reply = await v046.create(*SANDBOXES, wrong_version)
    assert (reply.status, reply.body["message"]) == (
        400,
        (
            "the API version in the data (agents.x-k8s.io/v1beta1) does not match the expected "
            "API version (agents.x-k8s.io/v1alpha1)"
        ),
    )
    reply = await v046.create(*SANDBOXES, dict(sandbox("box"), kind="Pod"))
    assert reply.status == 400 and "kind in the data (Pod)" in reply.body["message"]
    no_kind = sandbox("box")
    del no_kind["kind"]
    reply = await v046.create(*SANDBOXES, no_kind)
    assert reply.status == 400 and "Object 'Kind' is missing" in reply.body["message"]
    other_namespace = sandbox("box")
    other_namespace["metadata"]["namespace"] = "team-b"
    assert (await v046.create(*SANDBOXES, other_namespace)).status == 400
    assert v046.api.objects["sandboxes"] == {}


async def test_object_meta_is_validated(v046: Cluster) -> None:
    bad_label = sandbox("box")
    bad_label["metadata"]["labels"] = {"e2b.agentcube.io/id": "not a value!"}
    reply = await v046.create(*SANDBOXES, bad_label)
    assert (reply.status, reply.causes) == (422, [("metadata.labels", "FieldValueInvalid")])
    assert (await v046.create(*SANDBOXES, sandbox("Box_1"))).status == 422
    assert (await v046.create(*SANDBOXES, sandbox("box"))).status == 201
    huge = {"metadata": {"annotations": {"a": "x" * (256 * 1024 + 1)}}}
    reply = await v046.patch(*SANDBOXES, "box", huge)
    assert (reply.status, reply.causes) == (422, [("metadata.annotations", "FieldValueTooLong")])
    # Core kinds too.
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"k": "a b"}},
        "spec": {"containers": [{"name": "main", "image": "i"}]},
    }
    reply = await v046.core("create_namespaced_pod", NS, pod)
    assert reply.status == 422


async def test_create_conflicts_and_generate_name(v046: Cluster) -> None:
    assert (await v046.create(*SANDBOXES, sandbox("box"))).status == 201
    again = await v046.create(*SANDBOXES, sandbox("box"))
    assert (again.status, again.body["reason"]) == (409, "AlreadyExists")
    generated = sandbox("")
    generated["metadata"] = {"generateName": "box-"}
    reply = await v046.create(*SANDBOXES, generated)
    assert reply.status == 201
    name = reply.body["metadata"]["name"]
    assert name.startswith("box-") and len(name) == len("box-") + 5


async def test_patches_that_the_server_refuses(v046: Cluster) -> None:
    assert (await v046.create(*SANDBOXES, sandbox("box"))).status == 201
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 0}}
    assert (await v046.patch(*SANDBOXES, "box", stale)).status == 409
    strategic = await v046.patch(
        *SANDBOXES,
        "box",
        {"spec": {"replicas": 0}},
        _content_type="application/strategic-merge-patch+json",
    )
    assert strategic.status == 415
    json_patch = [{"op": "add", "path": "/spec/replicas", "value": 0}]
    reply = await v046.patch(
        *SANDBOXES, "box", json_patch, _content_type="application/json-patch+json"
    )
    assert (reply.status, reply.body["spec"]["replicas"]) == (200, 0)
    failing = [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "remove", "path": "/spec/replicas"},
    ]
    reply = await v046.patch(
        *SANDBOXES, "box", failing, _content_type="application/json-patch+json"
    )
    assert reply.status == 422
    stored = v046.api.get("sandboxes", NS, "box")
    assert stored is not None and stored["spec"]["replicas"] == 0
    renamed = await v046.patch(*SANDBOXES, "box", {"metadata": {"name": "other"}})
    assert renamed.status == 400
    missing = await v046.patch(*SANDBOXES, "nothing", {"spec": {"replicas": 0}})
    assert (missing.status, missing.body["reason"]) == (404, "NotFound")


async def test_secrets_are_decoded_as_the_server_does(v046: Cluster) -> None:
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": base64.b64encode(b"one").decode()},
        "stringData": {"b": "two"},
    }
    reply = await v046.core("create_namespaced_secret", NS, secret)
    assert reply.status == 201
    stored = v046.api.get("secrets", NS, "s")
    assert stored is not None
    assert stored["data"] == {"a": "b25l", "b": "dHdv"} and "stringData" not in stored
    assert stored["type"] == "Opaque"
    patch = {"stringData": {"a": "three"}}
    reply = await v046.core(
        "patch_namespaced_secret", "s", NS, patch, _content_type="application/merge-patch+json"
    )
    assert reply.status == 200 and reply.body["data"]["a"] == "dGhyZWU="
    not_base64 = dict(secret, metadata={"name": "t"}, data={"a": "not base64!"})
    reply = await v046.core("create_namespaced_secret", NS, not_base64)
    assert (reply.status, reply.body["reason"]) == (400, "BadRequest")
    spec_on_a_secret = dict(secret, metadata={"name": "u"}, spec={})
    path = f"/api/v1/namespaces/{NS}/secrets?fieldValidation=Strict"
    reply = await v046.raw("POST", path, spec_on_a_secret)
    assert reply.status == 400 and 'unknown field "spec"' in reply.body["message"]


async def test_pods_need_containers_and_sane_env(v046: Cluster) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "i",
                    "env": [
                        {
                            "name": "TOKEN",
                            "value": "x",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                        }
                    ],
                }
            ]
        },
    }
    reply = await v046.core("create_namespaced_pod", NS, pod)
    assert (reply.status, reply.causes) == (
        422,
        [("spec.containers[0].env[0].valueFrom", "FieldValueInvalid")],
    )
    reply = await v046.raw("POST", f"/api/v1/namespaces/{NS}/pods", dict(pod, spec={}))
    assert (reply.status, reply.causes) == (422, [("spec.containers", "FieldValueRequired")])
    del pod["spec"]["containers"][0]["env"][0]["value"]
    assert (await v046.core("create_namespaced_pod", NS, pod)).status == 201
    relabel = {"metadata": {"labels": {"e2b.agentcube.io/sandbox-id": "abc"}}}
    merge = {"_content_type": "application/merge-patch+json"}
    assert (await v046.core("patch_namespaced_pod", "p", NS, relabel, **merge)).status == 200
    new_env = {"spec": {"containers": [{"name": "main", "image": "i", "env": []}]}}
    reply = await v046.core("patch_namespaced_pod", "p", NS, new_env, **merge)
    assert (reply.status, reply.causes) == (422, [("spec", "FieldValueForbidden")])
