"""Volumes in Kubernetes mode, as pure functions: a volume is a PersistentVolumeClaim in its
tenant's namespace, and a sandbox that mounts it gets the claim in its pod template.

- The claim's name is derived from the volume's name (`e2b-volume-` + 40 hex of its
  sha256), so the API server itself keeps names unique per namespace: two Creates of one
  name cannot both succeed. The volume's id (random, what its content token is minted from)
  is a label; the name an annotation (E2B's names may hold `_` and capitals, which a DNS
  name may not).
- Claims are labelled `app.kubernetes.io/managed-by=agentcube-e2b`, which the admission
  policy requires of every PVC the lifecycle service writes or deletes
  (k8s/base/admission-lifecycle-secrets.yaml): it cannot touch a tenant's own claims.
- A mount is a pod volume per claim and a volumeMount per path in the sandbox's container.
  `fsGroup: 1000` makes the claim's files group-owned by `user` where the volume plugin
  supports ownership management, so the default user can write (kubelet changes them only
  when the root's group differs: `fsGroupChangePolicy: OnRootMismatch`).
- Which volumes a sandbox mounts is an annotation on its Sandbox (read back into
  `Sandbox.volume_mounts`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from extproc.lifecycle.sandboxes import VolumeMount

Obj = dict[str, Any]

PREFIX = "e2b.agentcube.io/"
LABEL_VOLUME_ID = PREFIX + "volume-id"
VOLUME_NAME = PREFIX + "volume-name"
CREATED_AT = PREFIX + "created-at"
MOUNTS = PREFIX + "volume-mounts"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "agentcube-e2b"
USER_ID = 1000
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")


def claim_name(name: str) -> str:
    return "e2b-volume-" + hashlib.sha256(name.encode()).hexdigest()[:40]


def claim_object(
    *, name: str, volume_id: str, namespace: str, size_mb: int, storage_class: str,
    access_mode: str, created_at: str,
) -> Obj:  # fmt: skip
    spec: Obj = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": f"{size_mb}Mi"}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(name),
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGER, LABEL_VOLUME_ID: volume_id},
            "annotations": {VOLUME_NAME: name, CREATED_AT: created_at},
        },
        "spec": spec,
    }


def volume_fields(claim: Obj) -> tuple[str, str, str] | None:
    """(volume id, name, created-at) of one of our claims, None for any other claim (or one
    whose name does not match its annotation: not ours to report)."""
    metadata = claim.get("metadata") or {}
    labels = metadata.get("labels") or {}
    notes = metadata.get("annotations") or {}
    volume_id, name = labels.get(LABEL_VOLUME_ID), notes.get(VOLUME_NAME)
    if labels.get(MANAGED_BY) != MANAGER or not volume_id or not isinstance(name, str):
        return None
    if metadata.get("name") != claim_name(name):
        return None
    return str(volume_id), name, str(notes.get(CREATED_AT) or metadata.get("creationTimestamp"))


def with_volumes(sandbox: Obj, mounts: list[tuple[str, VolumeMount]]) -> Obj:
    """`sandbox` (an agent-sandbox Sandbox body) with each (claim name, mount) in its pod."""
    if not mounts:
        return sandbox
    pod = sandbox["spec"]["podTemplate"]["spec"]
    volumes: list[Obj] = list(pod.get("volumes") or [])
    names: dict[str, str] = {}
    for claim, _ in mounts:
        if claim not in names:
            names[claim] = f"e2b-volume-{len(names)}"
            volumes.append({"name": names[claim], "persistentVolumeClaim": {"claimName": claim}})
    pod["volumes"] = volumes
    container = pod["containers"][0]
    container["volumeMounts"] = [
        *(container.get("volumeMounts") or []),
        *({"name": names[claim], "mountPath": mount.path} for claim, mount in mounts),
    ]
    security = dict(pod.get("securityContext") or {})
    security.setdefault("fsGroup", USER_ID)
    security.setdefault("fsGroupChangePolicy", "OnRootMismatch")
    pod["securityContext"] = security
    notes = sandbox["metadata"].setdefault("annotations", {})
    notes[MOUNTS] = json.dumps([{"name": m.name, "path": m.path} for _, m in mounts],
                               separators=(",", ":"))  # fmt: skip
    return sandbox


def volume_mounts_of(notes: Obj) -> tuple[VolumeMount, ...]:
    """The mounts a Sandbox's annotations record (none when absent or unreadable)."""
    try:
        listed = json.loads(notes.get(MOUNTS) or "[]")
    except ValueError:
        return ()
    if not isinstance(listed, list):
        return ()
    return tuple(
        VolumeMount(str(item["name"]), str(item["path"]))
        for item in listed
        if isinstance(item, dict) and "name" in item and "path" in item
    )
