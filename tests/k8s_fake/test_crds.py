"""The test CRDs (tests/support/crds/) say what the facts say, and are structural: the fake
API refuses a CRD that is not, and so would a real API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from support.crds import RELEASES, load_crds
from support.kube_resources import crd_resource
from support.kube_schema import PRESERVE, structural_problems

KINDS = ["Sandbox", "SandboxClaim", "SandboxTemplate", "SandboxWarmPool"]


def by_kind(release: str) -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in load_crds(release)}


def schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    result: dict[str, Any] = found["schema"]["openAPIV3Schema"]
    return result


@pytest.mark.parametrize("release", RELEASES)
def test_every_version_is_structural_with_a_status_subresource(release: str) -> None:
    for crd in load_crds(release):
        for version in crd["spec"]["versions"]:
            assert structural_problems(version["schema"]["openAPIV3Schema"]) == []
            assert version["subresources"] == {"status": {}}
        assert crd_resource(crd).crd


def test_v046_serves_v1alpha1_only() -> None:
    crds = by_kind("agent-sandbox-v0.4.6")
    assert sorted(crds) == sorted(KINDS)
    for crd in crds.values():
        assert [(v["name"], v["served"], v["storage"]) for v in crd["spec"]["versions"]] == [
            ("v1alpha1", True, True)
        ]


def test_v056_stores_v1beta1_and_still_serves_a_deprecated_v1alpha1() -> None:
    crds = by_kind("agent-sandbox-v0.5.6")
    assert sorted(crds) == sorted(KINDS)
    for crd in crds.values():
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        assert versions["v1alpha1"]["served"] and not versions["v1alpha1"]["storage"]
        assert versions["v1alpha1"]["deprecated"]
        assert versions["v1beta1"]["served"] and versions["v1beta1"]["storage"]


def test_sandbox_fields_follow_the_facts() -> None:
    alpha = schema(by_kind("agent-sandbox-v0.4.6")["Sandbox"], "v1alpha1")["properties"]["spec"]
    assert alpha["required"] == ["podTemplate"]
    assert alpha["properties"]["podTemplate"]["required"] == ["metadata", "spec"]
    assert "lifecycle" not in alpha["properties"]  # inlined: shutdownTime and shutdownPolicy
    assert alpha["properties"]["shutdownPolicy"] == {
        "type": "string",
        "enum": ["Delete", "Retain"],
        "default": "Retain",
    }
    assert alpha["properties"]["shutdownTime"]["format"] == "date-time"
    assert (
        alpha["properties"]["replicas"]["minimum"],
        alpha["properties"]["replicas"]["maximum"],
    ) == (0, 1)
    beta = schema(by_kind("agent-sandbox-v0.5.6")["Sandbox"], "v1beta1")["properties"]["spec"]
    assert "replicas" not in beta["properties"]
    assert beta["properties"]["operatingMode"]["enum"] == ["Running", "Suspended"]


def test_claim_refers_to_a_template_in_v1alpha1_and_to_a_pool_in_v1beta1() -> None:
    crd = by_kind("agent-sandbox-v0.5.6")["SandboxClaim"]
    alpha, beta = (schema(crd, v)["properties"]["spec"] for v in ("v1alpha1", "v1beta1"))
    assert alpha["required"] == ["sandboxTemplateRef"]
    assert alpha["properties"]["warmpool"] == {"type": "string"}
    assert beta["required"] == ["warmPoolRef"]
    assert beta["properties"]["warmPoolRef"]["required"] == ["name"]
    policy = alpha["properties"]["lifecycle"]["properties"]["shutdownPolicy"]
    assert policy["enum"] == ["Delete", "DeleteForeground", "Retain"]
    old = schema(by_kind("agent-sandbox-v0.4.6")["SandboxClaim"], "v1alpha1")["properties"]
    assert "warmpool" not in old["spec"]["properties"]


def test_code_interpreter_defaults_and_enum() -> None:
    (crd,) = load_crds("agentcube")
    spec = schema(crd, "v1alpha1")["properties"]["spec"]["properties"]
    assert spec["sessionTimeout"]["default"] == "15m"
    assert spec["maxSessionDuration"]["default"] == "8h"
    assert spec["authMode"] == {"type": "string", "enum": ["picod", "none"], "default": "picod"}
    assert spec["template"]["required"] == ["image"]
    assert spec["ports"]["items"]["required"] == ["port"]


def test_each_load_returns_its_own_dicts() -> None:
    first = load_crds("agent-sandbox-v0.5.6")
    sandbox = first[0]["spec"]["versions"]
    sandbox[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"].clear()
    # The anchors of the YAML file are not shared between versions, nor between loads.
    assert sandbox[1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert load_crds("agent-sandbox-v0.5.6")[0]["spec"]["versions"][0] != sandbox[0]


def test_an_unknown_release_is_an_error() -> None:
    with pytest.raises(ValueError, match="no CRD file 'agent-sandbox-v9'"):
        load_crds("agent-sandbox-v9")


def test_non_structural_schemas_are_refused() -> None:
    crd = load_crds("agent-sandbox-v0.4.6")[0]
    good = schema(crd, "v1alpha1")
    assert structural_problems(good) == []

    def broken(change: Any) -> list[str]:
        copied = copy.deepcopy(good)
        change(copied)
        return structural_problems(copied)

    assert broken(lambda s: s["properties"]["spec"].update({PRESERVE: True})) == [
        f"spec: {PRESERVE} is not allowed here"
    ]
    assert broken(lambda s: s.update({PRESERVE: True})) == [
        f"the root: {PRESERVE} is not allowed here"
    ]
    assert broken(lambda s: s["properties"]["spec"]["properties"]["service"].pop("type")) == [
        "spec.service: type must not be empty"
    ]
    assert broken(
        lambda s: s["properties"]["spec"]["properties"]["shutdownPolicy"].update(default="Never")
    ) == [
        'spec.shutdownPolicy: invalid default: spec.shutdownPolicy: Unsupported value: "Never": '
        'supported values: "Delete", "Retain"'
    ]
    assert broken(lambda s: s["properties"]["spec"]["required"].append("nope")) == [
        "spec: required field 'nope' is not in properties"
    ]
    bad_crd = copy.deepcopy(crd)
    bad_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"][
        PRESERVE
    ] = True
    with pytest.raises(ValueError, match="not structural"):
        crd_resource(bad_crd)
