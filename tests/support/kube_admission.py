"""What the API server does to an object on its way in and out, for the fake API (kubeapi.py).

In (`admit`, after `apply_patch` for a PATCH), in the server's order: apiVersion and kind
must be the URL's; namespace and name must agree with it; unknown fields fail a
`fieldValidation=Strict` write with 400 (the server's `strict decoding error: unknown field
"spec.lifecycle"`) or are pruned with a Warning (the default) or silently (`Ignore`); a
Secret is decoded; with a status subresource the main resource keeps the stored status and
`.../status` changes nothing else; defaults are applied; the fields only the server sets are
restored; ObjectMeta, the schema and the built-in kinds' rules are checked (422 Invalid with
`details.causes`); a custom resource is converted to its storage version.

Out (`view`): a stored object as a client of a version reads it, converted, pruned and
defaulted, so an object a fake controller `put` without defaults reads back as a real server
would show it.

Errors are raised as kmock.KubernetesError, which kmock renders as the server's Status.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import kmock

from . import kube_builtin, kube_conversion, kube_schema
from .kube_resources import Resource

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
# Set only by the server: a client's values are replaced by the stored ones (or new ones).
SERVER_FIELDS = ("uid", "creationTimestamp", "generation", "resourceVersion")


def failure(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Status error. kmock puts a traceback in an empty `details`, hence the empty causes."""
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def bad_request(message: str) -> kmock.KubernetesError:
    return failure(400, "BadRequest", message)


def invalid(
    resource: Resource, name: str, causes: list[kube_schema.Cause]
) -> kmock.KubernetesError:
    listed = str(causes[0]) if len(causes) == 1 else f"[{', '.join(map(str, causes))}]"
    return kmock.KubernetesError(
        status=422,
        reason="Invalid",
        message=f'{resource.qualified_kind} "{name}" is invalid: {listed}',
        details={
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": [cause.as_status_cause() for cause in causes],
        },
    )


# -- out ----------------------------------------------------------------------------------
def view(resource: Resource, version: str, stored: Obj) -> Obj:
    """A copy of a stored object as a client of `version` reads it."""
    if not resource.crd:
        return copy.deepcopy(stored)
    # The stored apiVersion is the storage one, whatever a controller `put` there.
    stored = dict(stored, apiVersion=resource.api_version(resource.storage))
    converted = kube_conversion.convert(stored, resource.api_version(version))
    schema = resource.schemas[version]
    if schema is not None:
        kube_schema.prune(schema, converted)
        kube_schema.default(schema, converted)
    return converted


# -- patches ------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch; ValueError names the operation that cannot apply."""
    if not isinstance(operations, list):
        raise ValueError("a JSON patch must be a list of operations")
    document = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict):
            raise ValueError(f"a JSON patch operation must be an object: {operation!r}")
        op, path = operation.get("op"), _pointer(operation.get("path"))
        if op == "test":
            if _resolve(document, path) != operation.get("value"):
                raise ValueError(f"test operation failed at {operation['path']}")
        elif op == "remove":
            document = _remove(document, path)
        elif op == "add":
            document = _add(document, path, copy.deepcopy(operation.get("value")))
        elif op == "replace":
            _resolve(document, path)
            document = _add(_remove(document, path), path, copy.deepcopy(operation.get("value")))
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from"))
            value = copy.deepcopy(_resolve(document, source))
            if op == "move":
                document = _remove(document, source)
            document = _add(document, path, value)
        else:
            raise ValueError(f"unknown JSON patch operation {op!r}")
    return document


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise ValueError(f"invalid JSON pointer {text!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in text.split("/")[1:]]


def _resolve(document: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(document, dict) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            raise ValueError(f"path /{'/'.join(path)} does not exist")
    return document


def _add(document: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent, last = _resolve(document, path[:-1]), path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and last == "-":
        parent.append(value)
    elif isinstance(parent, list) and last.isdigit() and int(last) <= len(parent):
        parent.insert(int(last), value)
    else:
        raise ValueError(f"cannot add at /{'/'.join(path)}")
    return document


def _remove(document: Any, path: list[str]) -> Any:
    if not path:
        return None
    parent = _resolve(document, path[:-1])
    _resolve(parent, path[-1:])
    if isinstance(parent, dict):
        del parent[path[-1]]
    else:
        del parent[int(path[-1])]
    return document


def apply_patch(resource: Resource, content_type: str, body: bytes, current: Obj) -> Obj:
    """`current` (as the client's version shows it) with the patch applied. Custom resources
    take JSON and merge patches (a strategic merge patch is 415, as on a real server); the
    older endpoints of `FakeApi.install` take any JSON object as a merge patch."""
    try:
        patch = json.loads(body)
    except ValueError:
        raise bad_request("the body of the request could not be decoded as JSON") from None
    if content_type == JSON_PATCH and (resource.crd or isinstance(patch, list)):
        try:
            patched = json_patch(current, patch)
        except ValueError as error:
            raise failure(422, "Invalid", str(error)) from None
    elif content_type == MERGE_PATCH or not resource.crd:
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        patched = merge_patch(current, patch)
    else:
        unknown = "the body of the request was in an unknown format"
        accepted = f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}"
        raise failure(415, "UnsupportedMediaType", f"{unknown} - {accepted}")
    if not isinstance(patched, dict):
        raise bad_request("the patched object is not a JSON object")
    return patched


# -- in -----------------------------------------------------------------------------------
def admit(
    resource: Resource,
    version: str,
    url: tuple[str, str | None],
    params: Mapping[str, str],
    obj: Obj,
    current: Obj | None,
    status_only: bool = False,
) -> tuple[Obj, list[str]]:
    """The object to store (storage version) for a create (`current` None) or a patch result
    `obj` in `version` at `url` (namespace, name), and the Warning texts to send."""
    creating = current is None
    _check_type_meta(resource, version, obj, creating)
    metadata = obj.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be a JSON object")
    namespace, name = url
    if metadata.get("namespace") not in (None, "", namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    metadata["namespace"] = namespace
    if not creating and metadata.get("name") != name:
        raise bad_request(
            f"the name of the object ({metadata.get('name')}) does not match the name on the "
            f"URL ({name})"
        )
    warnings = _prune(resource, version, params.get("fieldValidation", "Warn"), obj, creating)
    if resource.kind == "Secret" and not resource.group:
        try:
            kube_builtin.decode_secret(obj)
        except kube_schema.BadRequest as error:
            raise bad_request(str(error)) from None
    obj = _keep_status(resource, version, obj, current, status_only)
    schema = resource.schemas[version]
    if schema is not None:
        kube_schema.default(schema, obj)
    old = (current or {}).get("metadata", {})
    for field in SERVER_FIELDS:
        obj["metadata"].pop(field, None)
        if field in old:
            obj["metadata"][field] = old[field]
    causes = kube_builtin.validate_metadata(obj["metadata"])
    if schema is not None:
        causes += kube_schema.validate(schema, obj)
    if not resource.group:
        causes += kube_builtin.validate_builtin(resource.plural, obj, current)
    if causes:
        raise invalid(resource, str(obj["metadata"].get("name", "")), causes)
    if not resource.crd or version == resource.storage:
        return obj, warnings
    stored = kube_conversion.convert(obj, resource.api_version(resource.storage))
    storage_schema = resource.schemas.get(resource.storage)
    if storage_schema is not None:
        kube_schema.default(storage_schema, stored)
    return stored, warnings


def _check_type_meta(resource: Resource, version: str, obj: Obj, creating: bool) -> None:
    """apiVersion and kind must be the URL's. A missing apiVersion is taken from the URL, and
    a missing kind too for built-in kinds; a custom resource without a kind is a BadRequest,
    as the server's unstructured decoder has it."""
    api_version = resource.api_version(version)
    if "kind" not in obj and resource.crd and creating:
        raise bad_request(f"Object 'Kind' is missing in '{json.dumps(obj)}'")
    kind = obj.setdefault("kind", resource.kind)
    given = obj.setdefault("apiVersion", api_version)
    if given != api_version:
        raise bad_request(
            f"the API version in the data ({given}) does not match the expected API version "
            f"({api_version})"
        )
    if kind != resource.kind:
        raise bad_request(
            f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})"
        )


def _prune(resource: Resource, version: str, directive: str, obj: Obj, creating: bool) -> list[str]:
    """Drop the unknown fields; Strict fails on them (400), Warn returns Warning texts."""
    if directive not in FIELD_VALIDATION:
        raise bad_request(f"fieldValidation must be one of {', '.join(FIELD_VALIDATION)}")
    unknown = kube_schema.prune(resource.schemas[version], obj)
    if unknown and directive == "Strict":
        message = "strict decoding error: " + ", ".join(
            f'unknown field "{path}"' for path in unknown
        )
        if creating:  # the create handler wraps decoding errors, the patch handler does not
            message = (
                f'{resource.kind} in version "{version}" cannot be handled as a '
                f"{resource.kind}: {message}"
            )
        raise bad_request(message)
    return [f'unknown field "{path}"' for path in unknown] if directive == "Warn" else []


def _keep_status(
    resource: Resource, version: str, obj: Obj, current: Obj | None, status_only: bool
) -> Obj:
    """With a status subresource the main resource cannot write `.status` (nor create with
    one), and `.../status` can write nothing else."""
    if not resource.status_subresource:
        return obj
    if current is None:
        obj.pop("status", None)
        return obj
    before = view(resource, version, current)
    if status_only:
        before.pop("status", None)
        if obj.get("status") is not None:
            before["status"] = obj["status"]
        return before
    obj.pop("status", None)
    if "status" in before:
        obj["status"] = before["status"]
    return obj
