"""agent-sandbox's conversion between v1alpha1 and v1beta1, as its webhook does from v0.5.2.

The fake API stores each object once, in the storage version, and converts on the way in
and out of every other served version, as a real API server does through a CRD's
conversion webhook. Only two kinds change shape (notes/agent-sandbox-facts.md):

- Sandbox: v1alpha1 `spec.replicas` 1/0 <-> v1beta1 `spec.operatingMode` Running/Suspended
  (assumption: the names and the mapping; the facts say only that replicas was renamed).
  An absent value stays absent; each version's default (none, and Running) applies on read.
- SandboxClaim: v1beta1 has `spec.warmPoolRef.name` instead of `spec.sandboxTemplateRef`.
  A v1alpha1 claim converts to `warmPoolRef.name: shadow-pool-<template>` (the default warm
  pool policy), or to its `spec.warmpool` verbatim when that is set: which is why a v1alpha1
  claim on v0.5.x waits for a pool that does not exist. Back to v1alpha1, a shadow pool gives
  its template back; any other pool name becomes `spec.warmpool` and, for want of anything
  better, the template name too (assumption: the webhook keeps nothing else to recover it).

SandboxTemplate and SandboxWarmPool are identical in both versions; any other kind has one
version and is never converted.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

SHADOW_POOL_PREFIX = "shadow-pool-"
CONVERTIBLE = frozenset({"Sandbox", "SandboxClaim", "SandboxTemplate", "SandboxWarmPool"})
_BETA = "v1beta1"
_ALPHA = "v1alpha1"


def convert(obj: Obj, api_version: str) -> Obj:
    """A copy of `obj` as `api_version` (same group); ValueError for a kind or version pair
    that has no conversion."""
    converted = copy.deepcopy(obj)
    current = str(obj.get("apiVersion", ""))
    if current == api_version:
        return converted
    group, _, source = current.rpartition("/")
    target_group, _, target = api_version.rpartition("/")
    kind = obj.get("kind")
    if group != target_group or kind not in CONVERTIBLE or {source, target} != {_ALPHA, _BETA}:
        raise ValueError(f"no conversion of {kind} from {current} to {api_version}")
    converted["apiVersion"] = api_version
    spec = converted.get("spec")
    if isinstance(spec, dict):
        if kind == "Sandbox" and target == _BETA:
            _sandbox_to_beta(spec)
        elif kind == "Sandbox":
            _sandbox_to_alpha(spec)
        elif kind == "SandboxClaim" and target == _BETA:
            _claim_to_beta(spec)
        elif kind == "SandboxClaim":
            _claim_to_alpha(spec)
    return converted


def _sandbox_to_beta(spec: Obj) -> None:
    if "replicas" in spec:
        spec["operatingMode"] = "Suspended" if spec.pop("replicas") == 0 else "Running"


def _sandbox_to_alpha(spec: Obj) -> None:
    if "operatingMode" in spec:
        spec["replicas"] = 0 if spec.pop("operatingMode") == "Suspended" else 1


def _claim_to_beta(spec: Obj) -> None:
    template = spec.pop("sandboxTemplateRef", None)
    pool = spec.pop("warmpool", None)
    if pool:
        spec["warmPoolRef"] = {"name": pool}
    elif isinstance(template, dict) and template.get("name"):
        spec["warmPoolRef"] = {"name": SHADOW_POOL_PREFIX + str(template["name"])}


def _claim_to_alpha(spec: Obj) -> None:
    reference = spec.pop("warmPoolRef", None)
    name = str(reference.get("name") or "") if isinstance(reference, dict) else ""
    if not name:
        return
    if name.startswith(SHADOW_POOL_PREFIX):
        spec["sandboxTemplateRef"] = {"name": name.removeprefix(SHADOW_POOL_PREFIX)}
    else:
        spec["warmpool"] = name
        spec["sandboxTemplateRef"] = {"name": name}
