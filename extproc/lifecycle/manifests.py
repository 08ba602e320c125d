"""The objects of Kubernetes mode, as pure functions: CodeInterpreter -> Template, Create ->
Sandbox or SandboxClaim, Sandbox CR + Pod -> our Sandbox. No I/O, no client.

Labels and annotations are the contract in docs/contracts/README.md ("Kubernetes mode"),
read by the edge's informers. Choices beyond it:
- A CodeInterpreter serves the code interpreter (template port 49999) when one of its
  `spec.ports` is 49999; then the pod starts it too (k8s/sandbox-image/start.sh), else the
  pod gets `AGENTCUBE_E2B_INTERPRETER=off`.
- The CodeInterpreter's `command`/`args` are kept (the sandbox image's entrypoint runs picod
  on 49983 from the env below); picod's own flags are not put on the command line, so an
  image that wraps picod keeps working.
- The sandbox's envVars reach picod as `AGENTCUBE_E2B_PICOD_ENV` (one KEY=VALUE per line),
  not as container env entries: picod builds process environments from nothing plus its env
  vars, and a user var named like one of ours (PICOD_AUTH_PUBLIC_KEY) must not replace it.
- cpu_count and memory_mb come from the container's limits, else requests, else 2 / 512.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from extproc.core.errors import InvalidArgument
from extproc.lifecycle.sandboxes import OnTimeout, Sandbox, State
from extproc.lifecycle.templates import ENVD_VERSION, Template

Obj = dict[str, Any]

PREFIX = "e2b.agentcube.io/"
LABEL_ID = PREFIX + "sandbox-id"
LABEL_TEMPLATE = PREFIX + "template"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "agentcube-e2b"
STARTED_AT = PREFIX + "started-at"
END_AT = PREFIX + "end-at"
METADATA = PREFIX + "metadata"
ALIAS = PREFIX + "alias"
ON_TIMEOUT = PREFIX + "on-timeout"
TOKEN_SHA256 = PREFIX + "access-token-sha256"
# Not in the contract (the edge does not read it): on a warm-pool Sandbox, the claim to
# delete on Kill.
CLAIM = PREFIX + "claim"

ENVD_PORT = 49983
INTERPRETER_PORT = 49999
CONTAINER = "code-interpreter"  # AgentCube's container name for CodeInterpreter sandboxes
PUBLIC_KEY_ENV = "PICOD_AUTH_PUBLIC_KEY"
SANDBOX_ID_ENV = "AGENTCUBE_E2B_PICOD_SANDBOX_ID"
TOKEN_ENV = "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN"  # noqa: S105 (a variable name, not a secret)
PICOD_ENV_ENV = "AGENTCUBE_E2B_PICOD_ENV"
INTERPRETER_SWITCH_ENV = "AGENTCUBE_E2B_INTERPRETER"

SANDBOX_API = "agents.x-k8s.io/v1alpha1"
CLAIM_API = "extensions.agents.x-k8s.io/v1alpha1"


def object_name(sandbox_id: str) -> str:
    return f"e2b-{sandbox_id}"


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- CodeInterpreter -> Template ---------------------------------------------------------------

_QUANTITY = re.compile(r"([0-9.]+)([a-zA-Z]*)")
_BYTES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


def _resource(resources: Obj, name: str) -> str | None:
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(name)
        if value is not None:
            return str(value)
    return None


def cpu_count(resources: Obj) -> int:
    raw = _resource(resources, "cpu")
    match = _QUANTITY.fullmatch(raw or "")
    if not match:
        return 2
    value = float(match.group(1)) / (1000 if match.group(2) == "m" else 1)
    return max(1, math.ceil(value))


def memory_mb(resources: Obj) -> int:
    raw = _resource(resources, "memory")
    match = _QUANTITY.fullmatch(raw or "")
    if not match or match.group(2) not in _BYTES:
        return 512
    return max(1, int(float(match.group(1)) * _BYTES[match.group(2)] // 2**20))


def ci_ports(ci: Obj) -> tuple[int, ...]:
    ports = []
    for entry in (ci.get("spec") or {}).get("ports") or ():
        port = entry.get("port") if isinstance(entry, dict) else None
        if isinstance(port, int) and port != ENVD_PORT and port not in ports:
            ports.append(port)
    return tuple(ports)


def template_of(ci: Obj) -> Template:
    metadata = ci.get("metadata") or {}
    spec = ci.get("spec") or {}
    resources = (spec.get("template") or {}).get("resources") or {}
    created = parse_time(metadata.get("creationTimestamp")) or 0.0
    ports = ci_ports(ci)
    return Template(
        template_id=str(metadata.get("name") or ""), tenant=str(metadata.get("namespace") or ""),
        public=False, cpu_count=cpu_count(resources), memory_mb=memory_mb(resources),
        envd_version=ENVD_VERSION, created_at=created, updated_at=created, ports=ports,
        interpreter=INTERPRETER_PORT in ports,
    )  # fmt: skip


def warm_pool_size(ci: Obj) -> int:
    size = (ci.get("spec") or {}).get("warmPoolSize")
    return size if isinstance(size, int) and size > 0 else 0


# -- Create -> Sandbox / SandboxClaim -----------------------------------------------------------


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def labels(sandbox_id: str, template: str) -> dict[str, str]:
    return {LABEL_ID: sandbox_id, LABEL_TEMPLATE: template, MANAGED_BY: MANAGER}


def sandbox_annotations(
    *, started_at: float, end_at: float, metadata: dict[str, str], alias: str,
    on_timeout: OnTimeout, token: str,
) -> dict[str, str]:  # fmt: skip
    return {
        STARTED_AT: rfc3339(started_at),
        END_AT: rfc3339(end_at),
        METADATA: json.dumps(metadata, sort_keys=True, separators=(",", ":")),
        ALIAS: alias,
        ON_TIMEOUT: "pause" if on_timeout is OnTimeout.PAUSE else "kill",
        TOKEN_SHA256: token_sha256(token),
    }


def picod_env_lines(env_vars: dict[str, str]) -> str:
    for name, value in env_vars.items():
        if "\n" in value or "\r" in value:
            raise InvalidArgument(
                f"env var {name} contains a line break, which the kubernetes backend cannot "
                "pass to picod"
            )
    return "".join(f"{name}={value}\n" for name, value in sorted(env_vars.items()))


def sandbox_object(
    ci: Obj, *, sandbox_id: str, namespace: str, token: str, public_key_pem: str,
    env_vars: dict[str, str], object_labels: dict[str, str], object_annotations: dict[str, str],
    end_at: float,
) -> Obj:  # fmt: skip
    """The agent-sandbox Sandbox for one E2B sandbox from `ci`'s template."""
    spec = ci.get("spec") or {}
    tpl = spec.get("template") or {}
    env: list[Obj] = [e for e in tpl.get("environment") or () if isinstance(e, dict)]
    ours = {PUBLIC_KEY_ENV, SANDBOX_ID_ENV, TOKEN_ENV, PICOD_ENV_ENV, INTERPRETER_SWITCH_ENV}
    env = [e for e in env if e.get("name") not in ours]
    env += [
        {"name": PUBLIC_KEY_ENV, "value": public_key_pem},
        {"name": SANDBOX_ID_ENV, "value": sandbox_id},
        {"name": TOKEN_ENV, "value": token},
        {"name": PICOD_ENV_ENV, "value": picod_env_lines(env_vars)},
    ]
    ports = [{"name": "envd", "containerPort": ENVD_PORT, "protocol": "TCP"}]
    if INTERPRETER_PORT in ci_ports(ci):
        ports.append({"name": "jupyter", "containerPort": INTERPRETER_PORT, "protocol": "TCP"})
    else:
        env.append({"name": INTERPRETER_SWITCH_ENV, "value": "off"})
    container: Obj = {"name": CONTAINER, "image": tpl.get("image"), "env": env, "ports": ports}
    for key in ("imagePullPolicy", "command", "args", "resources"):
        if tpl.get(key):
            container[key] = tpl[key]
    pod_spec: Obj = {"containers": [container]}
    if tpl.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = tpl["imagePullSecrets"]
    if tpl.get("runtimeClassName"):
        pod_spec["runtimeClassName"] = tpl["runtimeClassName"]
    pod_labels = {**(tpl.get("labels") or {}), **object_labels}
    pod_metadata: Obj = {"labels": pod_labels}
    if tpl.get("annotations"):
        pod_metadata["annotations"] = dict(tpl["annotations"])
    return {
        "apiVersion": SANDBOX_API,
        "kind": "Sandbox",
        "metadata": {
            "name": object_name(sandbox_id),
            "namespace": namespace,
            "labels": dict(object_labels),
            "annotations": dict(object_annotations),
        },
        "spec": {
            "replicas": 1,
            "lifecycle": {"shutdownTime": rfc3339(end_at)},
            "podTemplate": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def claim_object(
    ci: Obj, *, sandbox_id: str, namespace: str, object_labels: dict[str, str],
    object_annotations: dict[str, str],
) -> Obj:  # fmt: skip
    """A SandboxClaim on `ci`'s warm pool (its SandboxTemplate is named after the CI), owned
    by the CI as AgentCube's are, so deleting the CI collects its claims."""
    ci_meta = ci.get("metadata") or {}
    metadata: Obj = {
        "name": object_name(sandbox_id), "namespace": namespace,
        "labels": dict(object_labels), "annotations": dict(object_annotations),
    }  # fmt: skip
    if ci_meta.get("uid"):
        metadata["ownerReferences"] = [{
            "apiVersion": ci.get("apiVersion") or "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "CodeInterpreter", "name": ci_meta.get("name"), "uid": ci_meta["uid"],
        }]  # fmt: skip
    return {
        "apiVersion": CLAIM_API,
        "kind": "SandboxClaim",
        "metadata": metadata,
        "spec": {"sandboxTemplateRef": {"name": ci_meta.get("name")}},
    }


def claimed_sandbox_name(claim: Obj) -> str:
    """The Sandbox a claim is bound to: `status.sandbox.name` (agent-sandbox writes `Name`
    in some versions), else '' while unbound."""
    bound = (claim.get("status") or {}).get("sandbox") or {}
    if isinstance(bound, dict):
        return str(bound.get("name") or bound.get("Name") or "")
    return ""


def timeout_patch(end_at: float) -> Obj:
    """The merge patch SetTimeout/Refresh/Connect send: end-at and shutdownTime together."""
    return {
        "metadata": {"annotations": {END_AT: rfc3339(end_at)}},
        "spec": {"lifecycle": {"shutdownTime": rfc3339(end_at)}},
    }


# -- Sandbox CR + Pod -> Sandbox ------------------------------------------------------------------


def pod_ready(pod: Obj | None) -> str:
    """The pod IP when the pod is Ready with an IP, else ''."""
    if not pod or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
        if isinstance(c, dict)
    )
    return str(status.get("podIP") or "") if ready else ""


def sandbox_of(cr: Obj, pod: Obj | None, token: str) -> Sandbox | None:
    """Our view of a labelled Sandbox CR; None if it lacks our labels."""
    metadata = cr.get("metadata") or {}
    labels_ = metadata.get("labels") or {}
    notes = metadata.get("annotations") or {}
    sandbox_id = labels_.get(LABEL_ID)
    if not sandbox_id or labels_.get(MANAGED_BY) != MANAGER:
        return None
    try:
        meta_doc = json.loads(notes.get(METADATA) or "{}")
    except ValueError:
        meta_doc = {}
    containers = (((cr.get("spec") or {}).get("podTemplate") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    resources = containers[0].get("resources") or {} if isinstance(containers[0], dict) else {}
    started = parse_time(notes.get(STARTED_AT)) or parse_time(metadata.get("creationTimestamp"))
    end = parse_time(notes.get(END_AT)) or 0.0
    host = pod_ready(pod)
    return Sandbox(
        sandbox_id=sandbox_id, template_id=str(labels_.get(LABEL_TEMPLATE) or ""),
        alias=str(notes.get(ALIAS) or ""), tenant=str(metadata.get("namespace") or ""),
        metadata={str(k): str(v) for k, v in meta_doc.items()} if isinstance(meta_doc, dict)
        else {}, env_vars={}, started_at=started or 0.0, end_at=end,
        state=State.RUNNING if host else State.STARTING, cpu_count=cpu_count(resources),
        memory_mb=memory_mb(resources), disk_size_mb=0, envd_version=ENVD_VERSION,
        envd_access_token=token, endpoint_host=host,
        on_timeout=OnTimeout.PAUSE if notes.get(ON_TIMEOUT) == "pause" else OnTimeout.KILL,
    )  # fmt: skip
