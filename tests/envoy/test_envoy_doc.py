"""docs/envoy.md: its YAML parses, and the Envoy config it embeds is the fragment's.

The Envoy Gateway and Istio objects cannot be applied here; what can be held to the tested
fragment is the raw Envoy config inside them, so a change to the generator that is not
carried into the page fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.envoy_config.fragment import SANDBOX_CLUSTER, render_fragment_yaml
from extproc.envoy_config.settings import EnvoySettings

DOC = Path(__file__).parents[2] / "docs" / "envoy.md"
ISTIO_EDGE_CLUSTER = "outbound|9001||agentcube-e2b-edge-grpc.agentcube-system.svc.cluster.local"


def _objects() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc is not None]


@pytest.fixture(scope="module")
def fragment() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        render_fragment_yaml(EnvoySettings(domain="e2b.example.com"))
    )
    return document


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in _objects() if isinstance(doc, dict) and "kind" in doc}


def _fragment_filter(fragment: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in fragment["http_filters"] if f["name"] == name)
    return found


def test_every_yaml_block_parses() -> None:
    assert len(_objects()) >= 15


def test_envoy_gateway_bootstrap_cluster_is_the_fragment(
    objects: dict[str, dict[str, Any]], fragment: dict[str, Any]
) -> None:
    merged = yaml.safe_load(objects["EnvoyProxy"]["spec"]["bootstrap"]["value"])
    (cluster,) = merged["static_resources"]["clusters"]
    assert cluster == next(c for c in fragment["clusters"] if c["name"] == SANDBOX_CLUSTER)


def test_istio_envoy_filter_values_are_the_fragment(
    objects: dict[str, dict[str, Any]], fragment: dict[str, Any]
) -> None:
    patches = {
        (patch["applyTo"], patch["patch"]["value"].get("name")): patch["patch"]["value"]
        for patch in objects["EnvoyFilter"]["spec"]["configPatches"]
    }
    header_mutation = "envoy.filters.http.header_mutation"
    assert patches[("HTTP_FILTER", header_mutation)] == _fragment_filter(fragment, header_mutation)
    ext_proc = _fragment_filter(fragment, "envoy.filters.http.ext_proc")
    ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = ISTIO_EDGE_CLUSTER
    assert patches[("HTTP_FILTER", "envoy.filters.http.ext_proc")] == ext_proc
    cluster = next(c for c in fragment["clusters"] if c["name"] == SANDBOX_CLUSTER)
    assert patches[("CLUSTER", SANDBOX_CLUSTER)] == cluster


def test_header_lists_match_the_fragment(
    objects: dict[str, dict[str, Any]], fragment: dict[str, Any]
) -> None:
    authz = _fragment_filter(fragment, "envoy.filters.http.ext_authz")["typed_config"]
    allowed = [pattern["exact"] for pattern in authz["allowed_headers"]["patterns"]]
    assert objects["SecurityPolicy"]["spec"]["extAuth"]["headersToExtAuth"] == allowed
    mutation = _fragment_filter(fragment, "envoy.filters.http.header_mutation")["typed_config"]
    stripped = [item["remove"] for item in mutation["mutations"]["request_mutations"]]
    early = objects["ClientTrafficPolicy"]["spec"]["headers"]["earlyRequestHeaders"]
    assert early["remove"] == stripped
