"""The checks the API server makes on a write that no CRD schema states, for the fake API
(kubeapi.py): ObjectMeta's on every object (`validate_metadata`: name, namespace, label and
annotation keys and values, the annotations' total size, ownerReferences), and, of the
built-in kinds the gateway writes, what a careless client trips over: a Secret's data must
be base64 and its stringData is folded into data (`decode_secret`); config keys; a Pod needs
named containers with images, each env entry a name and at most one source, and its spec
is immutable but for images (`validate_builtin`). Messages follow the server's wording.
"""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

from .kube_schema import PRESERVE, BadRequest, Cause, Obj, Schema, invalid, required, shown

MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_SECRET_BYTES = 1024 * 1024

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"

_SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    f"regex used for validation is '{_DNS1123_SUBDOMAIN}')"
)
_LABEL_RULE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    f"and must start and end with an alphanumeric character (regex used for validation is "
    f"'{_DNS1123_LABEL}')"
)
_NAME_PART_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    f"end with an alphanumeric character (regex used for validation is '{_QUALIFIED_NAME}')"
)
_LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (regex used for "
    f"validation is '{_LABEL_VALUE}')"
)
_CONFIG_KEY_RULE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (regex used "
    f"for validation is '{_CONFIG_KEY}')"
)
_POD_UPDATE_RULE = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds`"
)


def _not_a(path: str, what: str) -> Cause:
    return Cause("FieldValueTypeInvalid", path, f"Invalid value: must be {what}")


# -- ObjectMeta ---------------------------------------------------------------------------
def validate_metadata(metadata: Any) -> list[Cause]:
    """ObjectMeta's own checks, for every kind (all ours are namespaced)."""
    if not isinstance(metadata, dict):
        return [_not_a("metadata", "an object")]
    causes: list[Cause] = []
    name = metadata.get("name")
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str) or re.fullmatch(_DNS1123_SUBDOMAIN, name) is None:
        causes.append(invalid("metadata.name", name, _SUBDOMAIN_RULE))
    elif len(name) > 253:
        causes.append(invalid("metadata.name", name, "must be no more than 253 characters"))
    namespace = metadata.get("namespace")
    if namespace and (len(str(namespace)) > 63 or not re.fullmatch(_DNS1123_LABEL, namespace)):
        causes.append(invalid("metadata.namespace", namespace, _LABEL_RULE))
    causes.extend(_string_map("metadata.labels", metadata.get("labels"), label_values=True))
    annotations = metadata.get("annotations")
    causes.extend(_string_map("metadata.annotations", annotations, label_values=False))
    if isinstance(annotations, dict):
        size = sum(len(str(key)) + len(str(value)) for key, value in annotations.items())
        if size > MAX_ANNOTATIONS_BYTES:
            message = f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"
            causes.append(Cause("FieldValueTooLong", "metadata.annotations", message))
    causes.extend(_owner_references(metadata.get("ownerReferences")))
    return causes


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a valid label or annotation key (`[prefix/]name`), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not re.fullmatch(_DNS1123_SUBDOMAIN, prefix)):
        return f"prefix part {_SUBDOMAIN_RULE}"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if re.fullmatch(_QUALIFIED_NAME, name) is None:
        return _NAME_PART_RULE
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if re.fullmatch(_LABEL_VALUE, value) is None:
        return _LABEL_VALUE_RULE
    return None


def _string_map(path: str, mapping: Any, *, label_values: bool) -> list[Cause]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        return [_not_a(path, "a map of strings")]
    causes = []
    for key, value in mapping.items():
        if (problem := qualified_name_problem(str(key))) is not None:
            causes.append(invalid(path, key, problem))
        if not isinstance(value, str):
            causes.append(_not_a(f"{path}[{key}]", "a string"))
        elif label_values and (problem := label_value_problem(value)) is not None:
            causes.append(invalid(path, value, problem))
    return causes


def _owner_references(references: Any) -> list[Cause]:
    if references is None:
        return []
    if not isinstance(references, list):
        return [_not_a("metadata.ownerReferences", "a list")]
    causes = []
    for index, reference in enumerate(references):
        path = f"metadata.ownerReferences[{index}]"
        if not isinstance(reference, dict):
            causes.append(_not_a(path, "an object"))
            continue
        for key in ("apiVersion", "kind", "name", "uid"):
            if not reference.get(key):
                causes.append(invalid(f"{path}.{key}", "", f"{key} must not be empty"))
    controllers = [ref for ref in references if isinstance(ref, dict) and ref.get("controller")]
    if len(controllers) > 1:
        detail = "Only one reference can have Controller set to true"
        causes.append(invalid("metadata.ownerReferences", references, detail))
    return causes


# -- built-in kinds -----------------------------------------------------------------------
_STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_TYPE_META: Schema = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                      "metadata": {"type": "object"}}  # fmt: skip
# The top level of the built-in kinds the gateway writes: enough to find unknown fields there
# (a Secret with `spec`, a misspelt `stringdata`); a Pod's spec and status stay open.
BUILTIN_SCHEMAS: dict[str, Schema] = {
    "secrets": {"type": "object", "properties": {
        **_TYPE_META, "data": _STRING_MAP, "stringData": _STRING_MAP,
        "type": {"type": "string"}, "immutable": {"type": "boolean"}}},
    "configmaps": {"type": "object", "properties": {
        **_TYPE_META, "data": _STRING_MAP, "binaryData": _STRING_MAP,
        "immutable": {"type": "boolean"}}},
    "pods": {"type": "object", "properties": {
        **_TYPE_META, "spec": {"type": "object", PRESERVE: True},
        "status": {"type": "object", PRESERVE: True}}},
}  # fmt: skip


def decode_secret(secret: Obj) -> None:
    """What decoding a v1 Secret does, in place: `data` values must be base64 (BadRequest),
    `stringData` is merged into `data` (it wins) and dropped, `type` defaults to Opaque."""
    undecodable = 'Secret in version "v1" cannot be handled as a Secret'
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        raise BadRequest(f"{undecodable}: data must be a map")
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except ValueError:
            raise BadRequest(f"{undecodable}: illegal base64 data in data[{key}]") from None
    string_data = secret.pop("stringData", None) or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        secret["data"] = data
    secret.setdefault("type", "Opaque")


def validate_builtin(plural: str, obj: Obj, old: Obj | None) -> list[Cause]:
    """The checks of Secrets, ConfigMaps and Pods (create: `old` is None) that matter to us.
    A pod's spec is checked when it is created or changed: a fake kubelet may `put` pods
    without one, and patching their labels must still work."""
    if plural in ("secrets", "configmaps"):
        return _config_keys(obj)
    if plural != "pods":
        return []
    spec = obj.get("spec")
    if old is not None:
        if _mutable_pod_spec(spec) != _mutable_pod_spec(old.get("spec")):
            return [Cause("FieldValueForbidden", "spec", _POD_UPDATE_RULE)]
        if spec == old.get("spec"):
            return []
    return _pod_spec(spec)


def _config_keys(obj: Obj) -> list[Cause]:
    causes = []
    total = 0
    for field in ("data", "binaryData"):
        data = obj.get(field) or {}
        for key, value in data.items() if isinstance(data, dict) else ():
            total += len(str(value))
            if len(key) > 253 or re.fullmatch(_CONFIG_KEY, key) is None:
                causes.append(invalid(f"{field}[{key}]", key, _CONFIG_KEY_RULE))
    if total > MAX_SECRET_BYTES:
        message = f"Too long: must have at most {MAX_SECRET_BYTES} bytes"
        causes.append(Cause("FieldValueTooLong", "data", message))
    return causes


def _mutable_pod_spec(spec: Any) -> Any:
    """The spec without what a pod update may change."""
    if not isinstance(spec, dict):
        return spec
    frozen = copy.deepcopy(spec)
    for field in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        frozen.pop(field, None)
    for field in ("containers", "initContainers"):
        for container in frozen.get(field) or ():
            if isinstance(container, dict):
                container.pop("image", None)
    return frozen


def _pod_spec(spec: Any) -> list[Cause]:
    if not isinstance(spec, dict):
        return [required("spec")]
    if not spec.get("containers"):
        return [required("spec.containers")]
    causes: list[Cause] = []
    names: set[str] = set()
    for field in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(field) or ()):
            path = f"spec.{field}[{index}]"
            if not isinstance(container, dict):
                causes.append(_not_a(path, "an object"))
                continue
            name = container.get("name")
            if not name:
                causes.append(required(f"{path}.name"))
            elif len(str(name)) > 63 or re.fullmatch(_DNS1123_LABEL, str(name)) is None:
                causes.append(invalid(f"{path}.name", name, _LABEL_RULE))
            elif name in names:
                causes.append(
                    Cause("FieldValueDuplicate", f"{path}.name", f"Duplicate value: {shown(name)}")
                )
            names.add(str(name))
            if not container.get("image"):
                causes.append(required(f"{path}.image"))
            for number, variable in enumerate(container.get("env") or ()):
                causes.extend(env_var_problems(variable, f"{path}.env[{number}]"))
    return causes


_ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


def env_var_problems(variable: Any, path: str) -> list[Cause]:
    """A container `env` entry: a name, and at most one of value and valueFrom, whose one
    source names its object and key."""
    if not isinstance(variable, dict):
        return [_not_a(path, "an object")]
    causes = []
    if not variable.get("name"):
        causes.append(required(f"{path}.name"))
    source = variable.get("valueFrom")
    if source is None:
        return causes
    if variable.get("value"):
        detail = "may not be specified when `value` is not empty"
        causes.append(invalid(f"{path}.valueFrom", "", detail))
    given = [key for key in _ENV_SOURCES if isinstance(source, dict) and key in source]
    if not given:
        sources = ", ".join(f"`{key}`" for key in _ENV_SOURCES)
        detail = f"must specify one of: {sources}"
        causes.append(invalid(f"{path}.valueFrom", "", detail))
    elif len(given) > 1:
        detail = "may not have more than one field specified at a time"
        causes.append(invalid(f"{path}.valueFrom", "", detail))
    for key in given:
        if key in ("configMapKeyRef", "secretKeyRef"):
            selector = source[key] if isinstance(source[key], dict) else {}
            for part in ("name", "key"):
                if not selector.get(part):
                    causes.append(required(f"{path}.valueFrom.{key}.{part}"))
    return causes
