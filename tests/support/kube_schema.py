"""Structural schemas as the API server applies them to custom resources (apiextensions), for
the fake API (kubeapi.py), in the server's order: unknown fields are pruned (`prune`, which
reports their paths so the caller can fail a `fieldValidation=Strict` write or send Warning
headers), defaults are applied (`default`: nested defaults included, nulls of non-nullable
fields dropped), then the object is validated (`validate`: types, required, enums, bounds,
lengths, patterns, the date-time format). `structural_problems` says why a CRD's schema is
not one the server would accept. Messages follow the server's wording so a test can assert
on them; kube_builtin.py has the checks no schema states (ObjectMeta, built-in kinds).

Pure functions on JSON-like dicts: kubeapi.py maps `BadRequest` to a 400 Status and a list
of `Cause`s to a 422 Invalid Status.
"""

from __future__ import annotations

import copy
import json
import operator
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Schema = dict[str, Any]
Obj = dict[str, Any]

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"
# Everything ObjectMeta has; any other key under `metadata` is an unknown field.
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
})  # fmt: skip
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


class BadRequest(ValueError):
    """The body cannot even be decoded as the kind (HTTP 400 BadRequest)."""


@dataclass(frozen=True)
class Cause:
    """One field error of a 422 Invalid Status (`details.causes[]`)."""

    reason: str  # FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, ...
    field: str
    message: str

    def as_status_cause(self) -> Obj:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", path, f"Invalid value: {shown(value)}: {detail}")


def required(path: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- structural schemas -------------------------------------------------------------------
def structural_problems(schema: Schema) -> list[str]:
    """Why `schema` (a CRD version's openAPIV3Schema) is not structural, or is sloppier than
    the API server lets a CRD be; empty when it is fine."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("the root must have type: object")
    properties = schema.get("properties") or {}
    for where in ("", "spec", "status"):
        node = schema if not where else properties.get(where, {})
        if node.get(PRESERVE):
            problems.append(f"{where or 'the root'}: {PRESERVE} is not allowed here")
    metadata = properties.get("metadata")
    if metadata is not None and (
        metadata.get("type") != "object"
        or set(metadata.get("properties") or {}) - {"name", "generateName"}
    ):
        problems.append("metadata: only type: object (and name/generateName) may be specified")
    _structural(schema, "", problems)
    return problems


def _structural(node: Schema, path: str, problems: list[str]) -> None:
    where = path or "<root>"
    if not node.get("type") and not node.get(INT_OR_STRING) and not node.get(PRESERVE):
        problems.append(f"{where}: type must not be empty")
    properties = node.get("properties") or {}
    additional = node.get("additionalProperties")
    if properties and additional not in (None, False):
        problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    for name in node.get("required") or ():
        if name not in properties:
            problems.append(f"{where}: required field {name!r} is not in properties")
    if "default" in node:
        value = copy.deepcopy(node["default"])
        causes = validate(node, value, path)
        problems.extend(f"{where}: invalid default: {cause}" for cause in causes)
    for name, child in properties.items():
        _structural(child, _join(path, name), problems)
    if isinstance(additional, dict):
        _structural(additional, f"{path}[*]", problems)
    if isinstance(node.get("items"), dict):
        _structural(node["items"], f"{path}[*]", problems)
    elif node.get("type") == "array":
        problems.append(f"{where}: an array must have items")


# -- pruning ------------------------------------------------------------------------------
def prune(schema: Schema | None, obj: Obj) -> list[str]:
    """Drop, in place, every field of `obj` the schema does not know; returns their paths
    (`spec.lifecycle`, `spec.ports[0].name`, `metadata.label`), sorted as the server lists
    them. Without a schema only ObjectMeta's fields are known, and everything else is kept."""
    unknown: list[str] = []
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        for key in list(metadata):
            if key not in OBJECT_META_FIELDS:
                del metadata[key]
                unknown.append(f"metadata.{key}")
    if schema is not None:
        _prune(schema, obj, "", unknown, root=True)
    return sorted(unknown)


def _prune(node: Schema, value: Any, path: str, unknown: list[str], root: bool = False) -> None:
    if isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                _prune(items, item, f"{path}[{index}]", unknown)
        return
    if not isinstance(value, dict):
        return  # a scalar, or a type error validate() reports
    properties: dict[str, Schema] = node.get("properties") or {}
    additional = node.get("additionalProperties")
    for key in list(value):
        if root and key in ("apiVersion", "kind", "metadata"):
            continue
        child_path = _join(path, key)
        if key in properties:
            _prune(properties[key], value[key], child_path, unknown)
        elif isinstance(additional, dict):
            _prune(additional, value[key], child_path, unknown)
        elif additional is True or node.get(PRESERVE):
            continue
        else:
            del value[key]
            unknown.append(child_path)


# -- defaulting ---------------------------------------------------------------------------
def default(schema: Schema, obj: Obj) -> None:
    """Apply the schema's defaults to `obj` in place, as the server does after pruning: a
    missing field (or a null one that is not nullable) takes its default, defaults get their
    own nested defaults, and remaining nulls of non-nullable fields are dropped."""
    _default(schema, obj)


def _default(node: Schema, value: Any) -> None:
    if isinstance(value, dict):
        properties: dict[str, Schema] = node.get("properties") or {}
        for key, known in properties.items():
            if "default" in known and (key not in value or _dropped_null(known, value[key])):
                value[key] = copy.deepcopy(known["default"])
        for key in list(value):
            child: Schema | None = properties.get(key)
            if child is None and isinstance(node.get("additionalProperties"), dict):
                child = node["additionalProperties"]
            if child is None:
                continue
            if _dropped_null(child, value[key]):
                del value[key]
            else:
                _default(child, value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        items = node["items"]
        for index, item in enumerate(value):
            if _dropped_null(items, item) and "default" in items:
                value[index] = copy.deepcopy(items["default"])
            _default(items, value[index])


def _dropped_null(node: Schema, value: Any) -> bool:
    return value is None and not node.get("nullable")


# -- validation ---------------------------------------------------------------------------
_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object", type(None): "null"}  # fmt: skip


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _has_type(value: Any, wanted: str) -> bool:
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return _type_name(value) == wanted


def validate(schema: Schema, obj: Any, path: str = "") -> list[Cause]:
    """Every way `obj` breaks the schema (ObjectMeta at the root is validate_metadata's)."""
    causes: list[Cause] = []
    _validate(schema, obj, path, causes, root=not path)
    return causes


def _wrong_type(path: str, value: Any, wanted: str) -> Cause:
    actual = shown(_type_name(value))
    message = f"Invalid value: {actual}: {path} in body must be of type {wanted}: {actual}"
    return Cause("FieldValueTypeInvalid", path, message)


def _validate(node: Schema, value: Any, path: str, causes: list[Cause], root: bool) -> None:
    if value is None and node.get("nullable"):
        return
    wanted = node.get("type")
    if node.get(INT_OR_STRING):
        if not (_has_type(value, "integer") or isinstance(value, str)):
            causes.append(_wrong_type(path, value, "integer,string"))
            return
    elif wanted and not _has_type(value, wanted):
        causes.append(_wrong_type(path, value, wanted))
        return
    if "enum" in node and value not in node["enum"]:
        supported = ", ".join(shown(option) for option in node["enum"])
        message = f"Unsupported value: {shown(value)}: supported values: {supported}"
        causes.append(Cause("FieldValueNotSupported", path, message))
    if isinstance(value, str):
        _validate_string(node, value, path, causes)
    elif _has_type(value, "number"):
        _validate_number(node, value, path, causes)
    elif isinstance(value, list):
        _validate_array(node, value, path, causes)
    elif isinstance(value, dict):
        _validate_object(node, value, path, causes, root)


def _validate_string(node: Schema, value: str, path: str, causes: list[Cause]) -> None:
    if "maxLength" in node and len(value) > node["maxLength"]:
        message = f"Too long: may not be more than {node['maxLength']} bytes"
        causes.append(Cause("FieldValueTooLong", path, message))
    if "minLength" in node and len(value) < node["minLength"]:
        detail = f"{path} in body should be at least {node['minLength']} chars long"
        causes.append(invalid(path, value, detail))
    if "pattern" in node and re.search(node["pattern"], value) is None:
        causes.append(invalid(path, value, f"{path} in body should match '{node['pattern']}'"))
    if node.get("format") == "date-time" and not _is_date_time(value):
        detail = f"{path} in body must be of type date-time: {shown(value)}"
        causes.append(invalid(path, value, detail))


def _is_date_time(value: str) -> bool:
    if _DATE_TIME.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _validate_number(node: Schema, value: float, path: str, causes: list[Cause]) -> None:
    for bound, exclusive, word, beyond in (
        ("maximum", "exclusiveMaximum", "less", operator.gt),
        ("minimum", "exclusiveMinimum", "greater", operator.lt),
    ):
        if bound not in node:
            continue
        limit = node[bound]
        if beyond(value, limit) or (node.get(exclusive) and value == limit):
            strictly = "" if node.get(exclusive) else " or equal to"
            detail = f"{path} in body should be {word} than{strictly} {limit}"
            causes.append(invalid(path, value, detail))


def _validate_array(node: Schema, value: list[Any], path: str, causes: list[Cause]) -> None:
    if "maxItems" in node and len(value) > node["maxItems"]:
        message = f"Too many: {len(value)}: must have at most {node['maxItems']} items"
        causes.append(Cause("FieldValueTooMany", path, message))
    if "minItems" in node and len(value) < node["minItems"]:
        detail = f"{path} in body should have at least {node['minItems']} items"
        causes.append(invalid(path, len(value), detail))
    items = node.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(items, item, f"{path}[{index}]", causes, root=False)


def _validate_object(node: Schema, value: Obj, path: str, causes: list[Cause], root: bool) -> None:
    for name in node.get("required") or ():
        if name not in value:
            causes.append(required(_join(path, name)))
    properties: dict[str, Schema] = node.get("properties") or {}
    additional = node.get("additionalProperties")
    for key, item in value.items():
        if root and key == "metadata":
            continue
        child = properties.get(key)
        if child is None and isinstance(additional, dict):
            child = additional
        if child is not None:
            _validate(child, item, _join(path, key), causes, root=False)
