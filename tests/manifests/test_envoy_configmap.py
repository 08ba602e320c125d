"""The Envoy ConfigMap is exactly the generator's output for the Kubernetes settings.

Kubernetes differs from the local defaults in two settings only: the listener binds the
pod's interfaces (0.0.0.0:8081, the Service's target) and the domain is the example one.
The edge stays at 127.0.0.1:9001 in the same pod; admin stays on 127.0.0.1.
"""

from __future__ import annotations

import yaml

from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.settings import EnvoySettings, HostPort
from manifests.render import BASE, render

REGENERATE = (
    "agentcube-e2b envoy-config --listen 0.0.0.0:8081 --domain {domain} "
    "--edge 127.0.0.1:9001 --admin 127.0.0.1:9901 -o k8s/base/envoy.yaml"
)


def _edge_domain() -> str:
    """The edge's --domain, set through AGENTCUBE_E2B_EDGE_DOMAIN so overlays patch it by name."""
    (deployment,) = [
        o for o in render() if o["kind"] == "Deployment" and "edge" in o["metadata"]["name"]
    ]
    (edge,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "edge"
    ]
    assert "--domain" not in edge["command"]
    (domain,) = [e["value"] for e in edge["env"] if e["name"] == "AGENTCUBE_E2B_EDGE_DOMAIN"]
    return str(domain)


def kubernetes_settings(domain: str) -> EnvoySettings:
    return EnvoySettings(
        listen=HostPort("0.0.0.0", 8081),
        admin=HostPort("127.0.0.1", 9901),
        domain=domain,
        edges=(HostPort("127.0.0.1", 9001),),
    )


def test_configmap_is_the_generator_output() -> None:
    domain = _edge_domain()
    expected = render_yaml(kubernetes_settings(domain))
    (config_map,) = [o for o in render() if o["kind"] == "ConfigMap"]
    assert config_map["data"] == {"envoy.yaml": expected}, (
        "k8s/base/envoy.yaml is stale; run: " + REGENERATE.format(domain=domain)
    )
    assert (BASE / "envoy.yaml").read_text() == expected


def test_the_envoy_container_reads_it_and_serves_the_service_port() -> None:
    objects = render()
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and "edge" in o["metadata"]["name"]
    ]
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (envoy,) = [c for c in pod["containers"] if c["name"] == "envoy"]
    (mount,) = [m for m in envoy["volumeMounts"] if m["name"] == volume["name"]]
    args = envoy["command"]
    assert args[args.index("--config-path") + 1] == f"{mount['mountPath']}/envoy.yaml"
    listener = yaml.safe_load(config_map["data"]["envoy.yaml"])["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    assert [p["containerPort"] for p in envoy["ports"]] == [port]
