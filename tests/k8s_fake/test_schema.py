"""kube_schema and kube_builtin on their own: pruning, defaulting and validation as the API
server does them, and the ObjectMeta and built-in kind checks."""

from __future__ import annotations

from typing import Any

import pytest

from support import kube_builtin, kube_schema
from support.kube_schema import PRESERVE, Cause

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 0, "maximum": 1},
                "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                "when": {"type": "string", "format": "date-time"},
                "limits": {
                    "type": "object",
                    "additionalProperties": {"x-kubernetes-int-or-string": True},
                },
                "nested": {
                    "type": "object",
                    "default": {},
                    "properties": {"inner": {"type": "string", "default": "x"}},
                },
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
                "open": {
                    "type": "object",
                    PRESERVE: True,
                    "properties": {"n": {"type": "integer"}},
                },
                "nullable": {"type": "string", "nullable": True},
            },
        },
    },
}


def test_prune_drops_unknown_fields_and_names_them() -> None:
    obj = {
        "apiVersion": "v",
        "kind": "K",
        "metadata": {"name": "a", "label": {}},
        "spec": {
            "size": 1,
            "lifecycle": {"x": 1},
            "items": [{"name": "a", "extra": 1}],
            "open": {"n": 1, "anything": {"goes": True}},
        },
        "status": {"phase": "x"},
    }
    unknown = kube_schema.prune(SCHEMA, obj)
    assert unknown == ["metadata.label", "spec.items[0].extra", "spec.lifecycle", "status"]
    assert obj == {
        "apiVersion": "v",
        "kind": "K",
        "metadata": {"name": "a"},
        "spec": {"size": 1, "items": [{"name": "a"}], "open": {"n": 1, "anything": {"goes": True}}},
    }


def test_prune_without_a_schema_checks_metadata_only() -> None:
    obj = {"metadata": {"name": "a", "lables": {}}, "anything": 1}
    assert kube_schema.prune(None, obj) == ["metadata.lables"]
    assert obj == {"metadata": {"name": "a"}, "anything": 1}


def test_defaults_apply_to_missing_and_null_fields_and_nest() -> None:
    obj: dict[str, Any] = {"spec": {"size": 0, "mode": None, "when": None, "nullable": None}}
    kube_schema.default(SCHEMA, obj)
    assert obj == {"spec": {"size": 0, "mode": "A", "nested": {"inner": "x"}, "nullable": None}}
    untouched: dict[str, Any] = {"spec": {"size": 0, "mode": "B", "nested": {"inner": "y"}}}
    kube_schema.default(SCHEMA, untouched)
    assert untouched == {"spec": {"size": 0, "mode": "B", "nested": {"inner": "y"}}}


def test_a_valid_object_has_no_causes() -> None:
    obj = {
        "apiVersion": "v",
        "kind": "K",
        "metadata": {"anything": "metadata is not the schema's"},
        "spec": {
            "size": 1,
            "mode": "B",
            "when": "2026-01-02T03:04:05.5+01:00",
            "limits": {"cpu": "2", "memory": 512},
            "items": [{"name": "a"}],
        },
    }
    assert kube_schema.validate(SCHEMA, obj) == []


def _type_cause(field: str, wanted: str, actual: str) -> Cause:
    message = f'Invalid value: "{actual}": {field} in body must be of type {wanted}: "{actual}"'
    return Cause("FieldValueTypeInvalid", field, message)


def _invalid(field: str, shown: str, detail: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {shown}: {field} in body {detail}")


NOT_A_DATE = "must be of type date-time"


@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        ({}, Cause("FieldValueRequired", "spec.size", "Required value")),
        ({"size": "1"}, _type_cause("spec.size", "integer", "string")),
        ({"size": True}, _type_cause("spec.size", "integer", "boolean")),
        ({"size": 2}, _invalid("spec.size", "2", "should be less than or equal to 1")),
        ({"size": -1}, _invalid("spec.size", "-1", "should be greater than or equal to 0")),
        (
            {"size": 0, "mode": "C"},
            Cause(
                "FieldValueNotSupported",
                "spec.mode",
                'Unsupported value: "C": supported values: "A", "B"',
            ),
        ),
        (
            {"size": 0, "when": "tomorrow"},
            _invalid("spec.when", '"tomorrow"', f'{NOT_A_DATE}: "tomorrow"'),
        ),
        (
            {"size": 0, "when": "2026-13-01T00:00:00Z"},
            _invalid(
                "spec.when", '"2026-13-01T00:00:00Z"', f'{NOT_A_DATE}: "2026-13-01T00:00:00Z"'
            ),
        ),
        (
            {"size": 0, "limits": {"cpu": 1.5}},
            _type_cause("spec.limits.cpu", "integer,string", "number"),
        ),
        (
            {"size": 0, "items": [{}]},
            Cause("FieldValueRequired", "spec.items[0].name", "Required value"),
        ),
        ({"size": 0, "items": {}}, _type_cause("spec.items", "array", "object")),
    ],
)
def test_each_violation_is_one_cause(spec: dict[str, Any], cause: Cause) -> None:
    assert kube_schema.validate(SCHEMA, {"spec": spec}) == [cause]


def test_a_missing_required_object_is_one_cause() -> None:
    assert kube_schema.validate({"type": "object", "required": ["spec"]}, {}) == [
        Cause("FieldValueRequired", "spec", "Required value")
    ]


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({}, "metadata.name"),
        ({"name": "Upper"}, "metadata.name"),
        ({"name": "a_b"}, "metadata.name"),
        ({"name": "a" * 254}, "metadata.name"),
        ({"name": "a", "namespace": "Team"}, "metadata.namespace"),
        ({"name": "a", "labels": {"k": "bad value"}}, "metadata.labels"),
        ({"name": "a", "labels": {"k": "v" * 64}}, "metadata.labels"),
        ({"name": "a", "labels": {"k": "-edge"}}, "metadata.labels"),
        ({"name": "a", "labels": {"k": 1}}, "metadata.labels[k]"),
        ({"name": "a", "labels": {"bad key": "v"}}, "metadata.labels"),
        ({"name": "a", "labels": {"Bad_Prefix/k": "v"}}, "metadata.labels"),
        ({"name": "a", "labels": {"x/" + "k" * 64: "v"}}, "metadata.labels"),
        ({"name": "a", "annotations": {"k": "v" * (256 * 1024)}}, "metadata.annotations"),
        (
            {"name": "a", "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "o"}]},
            "metadata.ownerReferences[0].uid",
        ),
    ],
)
def test_object_meta_rejects(metadata: dict[str, Any], field: str) -> None:
    assert [cause.field for cause in kube_builtin.validate_metadata(metadata)] == [field]


def test_object_meta_accepts_what_the_server_accepts() -> None:
    metadata = {
        "name": "sandbox-1.team",
        "namespace": "team-a",
        "labels": {"e2b.agentcube.io/sandbox-id": "abc123", "empty": "", "a_b.c-d": "A_b.1"},
        "annotations": {"example.com/anything": "any text: at all, even spaces"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "o", "uid": "u"}],
    }
    assert kube_builtin.validate_metadata(metadata) == []


def test_secret_decoding() -> None:
    secret: dict[str, Any] = {"data": {"a": "dmFsaWQ="}, "stringData": {"b": "plain", "a": "new"}}
    kube_builtin.decode_secret(secret)
    assert secret == {"data": {"a": "bmV3", "b": "cGxhaW4="}, "type": "Opaque"}
    with pytest.raises(kube_schema.BadRequest, match=r"illegal base64 data in data\[a\]"):
        kube_builtin.decode_secret({"data": {"a": "not base64!"}})


@pytest.mark.parametrize(
    ("variable", "fields"),
    [
        ({"name": "A", "value": "x"}, []),
        ({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}, []),
        ({"value": "x"}, ["e.name"]),
        ({"name": "A", "value": "x", "valueFrom": {"fieldRef": {}}}, ["e.valueFrom"]),
        ({"name": "A", "valueFrom": {}}, ["e.valueFrom"]),
        (
            {"name": "A", "valueFrom": {"fieldRef": {}, "secretKeyRef": {"name": "s", "key": "k"}}},
            ["e.valueFrom"],
        ),
        (
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}},
            ["e.valueFrom.secretKeyRef.key"],
        ),
    ],
)
def test_env_entries(variable: dict[str, Any], fields: list[str]) -> None:
    assert [cause.field for cause in kube_builtin.env_var_problems(variable, "e")] == fields


def test_pod_spec_checks_and_immutability() -> None:
    pod = {"spec": {"containers": [{"name": "main", "image": "i"}]}}
    assert kube_builtin.validate_builtin("pods", pod, None) == []
    fields = [c.field for c in kube_builtin.validate_builtin("pods", {"spec": {}}, None)]
    assert fields == ["spec.containers"]
    two = {"spec": {"containers": [{"name": "main"}, {"name": "main", "image": "i"}]}}
    fields = [c.field for c in kube_builtin.validate_builtin("pods", two, None)]
    assert fields == ["spec.containers[0].image", "spec.containers[1].name"]
    new_image = {"spec": {"containers": [{"name": "main", "image": "j"}]}}
    assert kube_builtin.validate_builtin("pods", new_image, pod) == []
    new_env = {"spec": {"containers": [{"name": "main", "image": "i", "env": [{"name": "A"}]}]}}
    (cause,) = kube_builtin.validate_builtin("pods", new_env, pod)
    assert (cause.field, cause.reason) == ("spec", "FieldValueForbidden")
    # A pod a fake kubelet `put` without a spec can still have its labels patched.
    assert kube_builtin.validate_builtin("pods", {"metadata": {"labels": {}}}, {}) == []
