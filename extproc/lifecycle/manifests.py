"""The objects of Kubernetes mode, as pure functions: CodeInterpreter -> Template, Create ->
Sandbox (+ its Secret) or SandboxClaim, Sandbox CR + Pod -> our Sandbox. No I/O, no client.

Labels and annotations are the contract in docs/contracts/README.md ("Kubernetes mode"),
read by the edge's informers. Field names follow agent-sandbox (notes/agent-sandbox-facts.md):
the Sandbox's lifecycle is inlined (`spec.shutdownTime`, `spec.shutdownPolicy`), v1beta1
says `operatingMode` where v1alpha1 says `replicas`, and a v1beta1 claim names its warm
pool where a v1alpha1 claim names its template. Choices beyond them:
- Secrets never sit in a spec: the envd access token and the envVars of a cold sandbox live
  in a Secret named like its Sandbox and owned by it, read by the pod through
  `secretKeyRef`. A warm-pool pod exists before its sandbox does, so it receives them over
  picod's `POST /init` when claimed instead (kubernetes.py).
- Every Sandbox we make or adopt carries a proof of origin (extproc/k8s/object_proof.py)
  over its namespace, name and id; a copied id label without it counts for nothing.
- A CodeInterpreter serves the code interpreter (template port 49999) when one of its
  `spec.ports` is 49999; then the pod starts it too (k8s/sandbox-image/start.sh), else the
  pod gets `AGENTCUBE_E2B_INTERPRETER=off`.
- `authMode: none` means AgentCube's pods trust no key, so no key is injected: picod then
  checks only the envd access token (docs/kubernetes.md says what that means).
- `sessionTimeout` is the default timeout, `maxSessionDuration` caps the life of a sandbox.
- cpu_count and memory_mb come from the container's limits, else requests, else 2 / 512.
- Injected picod: a CodeInterpreter annotated `e2b.agentcube.io/picod-bundle-image` (the
  ones `from_image` builds make, kube_templates.py) runs an image that need not have picod
  or even Python. Its Sandbox gets an init container of that image (the gateway image, which
  carries picod's bundle, extproc/picod_bundle.py) copying the bundle into an `emptyDir`,
  and the container's command is picod run from there; the image's own entrypoint does not
  run. Such a template has no warm pool (`warm_pool_size` 0): AgentCube's pool pods come from
  the CodeInterpreter alone, which has no field for an init container, so they would have
  no picod.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from extproc.k8s.discovery import AgentSandboxKinds
from extproc.lifecycle.sandboxes import OnTimeout, Sandbox, State
from extproc.lifecycle.templates import ENVD_VERSION, Template
from extproc.lifecycle.volume_manifests import volume_mounts_of
from extproc.picod_bundle import launcher

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
# "paused" while paused (absent: running); the edge reads it with AUTO_RESUME.
STATE = PREFIX + "state"
AUTO_RESUME = PREFIX + "auto-resume"
# The longest life the template allows this sandbox, seconds from its start.
MAX_DURATION = PREFIX + "max-duration-s"
# The ports E2B traffic may reach, comma-separated (envd's included), when the
# CodeInterpreter lists `ports`; absent: every port (the edge's directory reads it).
PORTS = PREFIX + "ports"
# Not in the contract (the edge does not read them): on a warm-pool Sandbox, the claim to
# delete on Kill; on any Sandbox, whether it came from a claim.
CLAIM = PREFIX + "claim"
POD_NAME = "agents.x-k8s.io/pod-name"  # agent-sandbox's, on every Sandbox it runs
# On a CodeInterpreter: the image whose BUNDLE_SOURCE holds picod's bundle, to inject it.
PICOD_BUNDLE_IMAGE = PREFIX + "picod-bundle-image"
BUNDLE_SOURCE = "/opt/agentcube-e2b/picod"  # in the gateway image (k8s/gateway-image)
BUNDLE_MOUNT = "/agentcube-e2b"  # the emptyDir, in both containers
BUNDLE_VOLUME = "agentcube-e2b-picod"

ENVD_PORT = 49983
INTERPRETER_PORT = 49999
CONTAINER = "code-interpreter"  # AgentCube's container name for CodeInterpreter sandboxes
PUBLIC_KEY_ENV = "PICOD_AUTH_PUBLIC_KEY"
SANDBOX_ID_ENV = "AGENTCUBE_E2B_PICOD_SANDBOX_ID"
TOKEN_ENV = "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN"  # noqa: S105 (a variable name, not a secret)
PICOD_ENV_JSON_ENV = "AGENTCUBE_E2B_PICOD_ENV_JSON"
INTERPRETER_SWITCH_ENV = "AGENTCUBE_E2B_INTERPRETER"
# Keys of the per-sandbox Secret.
SECRET_TOKEN_KEY = "access-token"  # noqa: S105 (a key name)
SECRET_ENV_KEY = "env-vars.json"  # noqa: S105 (a key name)

DEFAULT_SESSION_TIMEOUT_S = 15 * 60  # AgentCube's CRD default
DEFAULT_MAX_SESSION_S = 8 * 3600


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


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")  # Go takes ASCII digits only
_DURATION_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def go_duration_s(text: Any, default: int) -> int:
    """A Go duration ("15m", "1h30m", "90s") in whole seconds; `default` if unreadable."""
    if not isinstance(text, str) or not text:
        return default
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return default
    seconds = int(sum(float(n) * _DURATION_UNIT[u] for n, u in parts))
    return seconds if seconds > 0 else default


# -- CodeInterpreter -> Template ---------------------------------------------------------------

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-zA-Z]*)")
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


def open_ports(ci: Obj) -> str | None:
    """The PORTS annotation for sandboxes of `ci`: envd's and its `spec.ports`, or None when
    it lists none (then every port is reachable, as on E2B)."""
    listed = (ci.get("spec") or {}).get("ports")
    if not listed:
        return None
    return ",".join(str(port) for port in sorted({ENVD_PORT, *ci_ports(ci)}))


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


def bundle_image(ci: Obj) -> str:
    """The image to inject picod from, or '' when the template's image brings its own."""
    notes = (ci.get("metadata") or {}).get("annotations") or {}
    return str(notes.get(PICOD_BUNDLE_IMAGE) or "")


def warm_pool_size(ci: Obj) -> int:
    """0 for an injected template whatever it says: its pool's pods would have no picod."""
    size = (ci.get("spec") or {}).get("warmPoolSize")
    return size if isinstance(size, int) and size > 0 and not bundle_image(ci) else 0


def jwt_auth(ci: Obj) -> bool:
    """Whether the CodeInterpreter's pods check the router's JWT (authMode picod, the default)."""
    return (ci.get("spec") or {}).get("authMode") != "none"


def session_timeout_s(ci: Obj) -> int:
    return go_duration_s((ci.get("spec") or {}).get("sessionTimeout"), DEFAULT_SESSION_TIMEOUT_S)


def max_session_s(ci: Obj) -> int:
    return go_duration_s((ci.get("spec") or {}).get("maxSessionDuration"), DEFAULT_MAX_SESSION_S)


# -- Create -> Sandbox / Secret / SandboxClaim -------------------------------------------------


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def labels(sandbox_id: str, template: str) -> dict[str, str]:
    return {LABEL_ID: sandbox_id, LABEL_TEMPLATE: template, MANAGED_BY: MANAGER}


def pod_labels(sandbox_id: str, template: str) -> dict[str, str]:
    """What our informers and the edge's select pods by. Without `app.kubernetes.io/*`: a
    claim's additionalPodMetadata may not set that domain."""
    return {LABEL_ID: sandbox_id, LABEL_TEMPLATE: template}


def sandbox_annotations(
    *, started_at: float, end_at: float, metadata: dict[str, str], alias: str,
    on_timeout: OnTimeout, auto_resume: bool, token: str, max_duration_s: int,
) -> dict[str, str]:  # fmt: skip
    notes = {
        STARTED_AT: rfc3339(started_at),
        END_AT: rfc3339(end_at),
        METADATA: json.dumps(metadata, sort_keys=True, separators=(",", ":")),
        ALIAS: alias,
        ON_TIMEOUT: "pause" if on_timeout is OnTimeout.PAUSE else "kill",
        TOKEN_SHA256: token_sha256(token),
        MAX_DURATION: str(max_duration_s),
    }
    if auto_resume:
        notes[AUTO_RESUME] = "true"
    return notes


def secret_object(
    *, name: str, namespace: str, token: str, env_vars: dict[str, str],
    object_labels: dict[str, str], owner: Obj | None = None,
) -> Obj:  # fmt: skip
    """The Secret holding a sandbox's token and envVars (`stringData`: the API server encodes
    it). A cold sandbox's pod reads it; a warm one's is re-bound from it after a resume."""
    metadata: Obj = {"name": name, "namespace": namespace, "labels": dict(object_labels)}
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "stringData": {
            SECRET_TOKEN_KEY: token,
            SECRET_ENV_KEY: json.dumps(env_vars, sort_keys=True, separators=(",", ":")),
        },
    }


def owner_reference(obj: Obj) -> Obj:
    """A reference that makes the referrer go when `obj` goes (garbage collection)."""
    metadata = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
        "name": metadata.get("name"), "uid": metadata.get("uid"),
    }  # fmt: skip


def env_vars_of(secret: Obj) -> dict[str, str]:
    """The envVars a sandbox Secret holds ({} when unreadable)."""
    raw = (secret.get("data") or {}).get(SECRET_ENV_KEY)
    try:
        doc = json.loads(base64.b64decode(raw or "")) if raw else {}
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): str(v) for k, v in doc.items()}


def _from_secret(name: str, secret: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def operating(kinds: AgentSandboxKinds, running: bool) -> Obj:
    """The spec fields that run (or scale down) a Sandbox's pod, in `kinds`' version."""
    if kinds.beta:
        # assumption: v1beta1's operatingMode values (the facts name only the field).
        return {"operatingMode": "Running" if running else "Suspended"}
    return {"replicas": 1 if running else 0}


def sandbox_object(
    ci: Obj, kinds: AgentSandboxKinds, *, sandbox_id: str, namespace: str, public_key_pem: str,
    object_labels: dict[str, str], object_annotations: dict[str, str], end_at: float | None,
) -> Obj:  # fmt: skip
    """The agent-sandbox Sandbox for one E2B sandbox from `ci`'s template; its token and
    envVars come from the Secret of the same name. `end_at` None: no shutdownTime (a sandbox
    that pauses on timeout must not be deleted by the controller)."""
    name = object_name(sandbox_id)
    spec = ci.get("spec") or {}
    tpl = spec.get("template") or {}
    env: list[Obj] = [e for e in tpl.get("environment") or () if isinstance(e, dict)]
    ours = {PUBLIC_KEY_ENV, SANDBOX_ID_ENV, TOKEN_ENV, PICOD_ENV_JSON_ENV, INTERPRETER_SWITCH_ENV}
    env = [e for e in env if e.get("name") not in ours]
    if jwt_auth(ci):
        env.append({"name": PUBLIC_KEY_ENV, "value": public_key_pem})
    env += [
        {"name": SANDBOX_ID_ENV, "value": sandbox_id},
        _from_secret(TOKEN_ENV, name, SECRET_TOKEN_KEY),
        _from_secret(PICOD_ENV_JSON_ENV, name, SECRET_ENV_KEY),
    ]
    ports = [{"name": "envd", "containerPort": ENVD_PORT, "protocol": "TCP"}]
    if INTERPRETER_PORT in ci_ports(ci) and not bundle_image(ci):  # the bundle has none
        ports.append({"name": "jupyter", "containerPort": INTERPRETER_PORT, "protocol": "TCP"})
    else:
        env.append({"name": INTERPRETER_SWITCH_ENV, "value": "off"})
    container: Obj = {"name": CONTAINER, "image": tpl.get("image"), "env": env, "ports": ports}
    for key in ("imagePullPolicy", "command", "args", "resources"):
        if tpl.get(key):
            container[key] = tpl[key]
    pod_spec: Obj = {"containers": [container]}
    if bundle_image(ci):
        _inject_picod(pod_spec, bundle_image(ci))
    if tpl.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = tpl["imagePullSecrets"]
    if tpl.get("runtimeClassName"):
        pod_spec["runtimeClassName"] = tpl["runtimeClassName"]
    pod_metadata: Obj = {"labels": {**(tpl.get("labels") or {}), **pod_labels(
        object_labels[LABEL_ID], object_labels[LABEL_TEMPLATE])}}  # fmt: skip
    if tpl.get("annotations"):
        pod_metadata["annotations"] = dict(tpl["annotations"])
    sandbox_spec: Obj = {
        **operating(kinds, True),
        "podTemplate": {"metadata": pod_metadata, "spec": pod_spec},
    }
    if end_at is not None:
        sandbox_spec.update(expiry(end_at))
    return {
        "apiVersion": kinds.sandbox.api_version,
        "kind": "Sandbox",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(object_labels),
            "annotations": dict(object_annotations),
        },
        "spec": sandbox_spec,
    }


def _inject_picod(pod_spec: Obj, image: str) -> None:
    """Run picod from its bundle, copied into an emptyDir by an init container of `image`."""
    mount = {"name": BUNDLE_VOLUME, "mountPath": BUNDLE_MOUNT}
    pod_spec["volumes"] = [{"name": BUNDLE_VOLUME, "emptyDir": {}}]
    # cp -R, not -a: the gateway image runs as a non-root user, which cannot keep owners.
    pod_spec["initContainers"] = [{
        "name": "picod-bundle", "image": image,
        "command": ["cp", "-R", f"{BUNDLE_SOURCE}/.", BUNDLE_MOUNT], "volumeMounts": [mount],
    }]  # fmt: skip
    container = pod_spec["containers"][0]
    container["command"] = [*launcher(BUNDLE_MOUNT), "picod"]
    container.pop("args", None)
    container["volumeMounts"] = [{**mount, "readOnly": True}]


def expiry(end_at: float | None) -> Obj:
    """The inlined lifecycle fields: deleted (not only its pod: the default policy Retain
    keeps the object) at `end_at`; None clears the time (JSON merge patch null)."""
    if end_at is None:
        return {"shutdownTime": None}
    return {"shutdownTime": rfc3339(end_at), "shutdownPolicy": "Delete"}


def claim_object(
    ci: Obj, kinds: AgentSandboxKinds, *, sandbox_id: str, namespace: str,
    end_at: float | None,
) -> Obj:  # fmt: skip
    """A SandboxClaim on `ci`'s warm pool (AgentCube names the SandboxTemplate and the
    SandboxWarmPool after the CI), owned by the CI as AgentCube's are, so deleting the CI
    collects its claims. Our pod labels ride in additionalPodMetadata, which the controller
    puts on whichever pod the claim ends up with, adopted or new."""
    ci_meta = ci.get("metadata") or {}
    template = str(ci_meta.get("name") or "")
    metadata: Obj = {
        "name": object_name(sandbox_id), "namespace": namespace,
        "labels": labels(sandbox_id, template),
    }  # fmt: skip
    if ci_meta.get("uid"):
        metadata["ownerReferences"] = [{
            "apiVersion": ci.get("apiVersion") or "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "CodeInterpreter", "name": template, "uid": ci_meta["uid"],
        }]  # fmt: skip
    spec: Obj = {"additionalPodMetadata": {"labels": pod_labels(sandbox_id, template)}}
    if kinds.beta:
        spec["warmPoolRef"] = {"name": template}
    else:
        spec["sandboxTemplateRef"] = {"name": template}
    if end_at is not None:
        spec["lifecycle"] = expiry(end_at)
    return {"apiVersion": kinds.claim.api_version, "kind": "SandboxClaim", "metadata": metadata,
            "spec": spec}  # fmt: skip


def claimed_sandbox_name(claim: Obj) -> str:
    """The Sandbox a claim is bound to: `status.sandbox.name` (agent-sandbox writes `Name`
    in some versions), else '' while unbound."""
    bound = (claim.get("status") or {}).get("sandbox") or {}
    if isinstance(bound, dict):
        return str(bound.get("name") or bound.get("Name") or "")
    return ""


def pod_name(cr: Obj) -> str:
    """The pod agent-sandbox runs for this Sandbox: its pod-name annotation (an adopted
    Sandbox's), else the Sandbox's own name."""
    metadata = cr.get("metadata") or {}
    return str((metadata.get("annotations") or {}).get(POD_NAME) or metadata.get("name") or "")


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
    paused = notes.get(STATE) == "paused"
    host = "" if paused else pod_ready(pod)
    state = State.PAUSED if paused else State.RUNNING if host else State.STARTING
    return Sandbox(
        sandbox_id=sandbox_id, template_id=str(labels_.get(LABEL_TEMPLATE) or ""),
        alias=str(notes.get(ALIAS) or ""), tenant=str(metadata.get("namespace") or ""),
        metadata={str(k): str(v) for k, v in meta_doc.items()} if isinstance(meta_doc, dict)
        else {}, env_vars={}, started_at=started or 0.0, end_at=end, state=state,
        cpu_count=cpu_count(resources), memory_mb=memory_mb(resources), disk_size_mb=0,
        envd_version=ENVD_VERSION, envd_access_token=token, endpoint_host=host,
        on_timeout=OnTimeout.PAUSE if notes.get(ON_TIMEOUT) == "pause" else OnTimeout.KILL,
        auto_resume=notes.get(AUTO_RESUME) == "true", volume_mounts=volume_mounts_of(notes),
    )  # fmt: skip


def max_duration_of(cr: Obj, default: int) -> int:
    raw = ((cr.get("metadata") or {}).get("annotations") or {}).get(MAX_DURATION)
    try:
        value = int(str(raw))
    except ValueError:
        return default
    return value if value > 0 else default
