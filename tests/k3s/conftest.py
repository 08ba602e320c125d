"""Opt-in: the gateway in Kubernetes mode against a real k3s, started with `testcontainers`.

It runs only with `AGENTCUBE_E2B_K3S=1` and a Docker engine that answers GET /_ping
(`DOCKER_HOST`, unix:// or tcp://, else /var/run/docker.sock); otherwise every test here is
reported SKIPPED with the reason ("set AGENTCUBE_E2B_K3S=1 to run" / "no Docker engine: ...").
It is never counted as passed without having run. `testcontainers` (and so `docker`) is
imported only inside the fixture, so this package imports where neither Docker nor the
package is usable.

What is real:
- The API server, etcd-in-sqlite, admission, the garbage collector and the node lifecycle
  controller of a k3s container (`AGENTCUBE_E2B_K3S_IMAGE`, default below), reached over TLS
  with k3s's admin kubeconfig (cluster-admin: the RBAC of k8s/base is not exercised here;
  tests/manifests reads those Role rules).
- The production processes, run locally against that kubeconfig as tests/e2e_k8s runs them:
  `agentcube-e2b keys create --kubernetes` writing the key Secret and ConfigMap, the lifecycle
  service with `--backend kubernetes` (CodeInterpreter reads, Sandbox CR writes, its informers,
  the router identity Secret), the edge with `--keys-source kubernetes --directory-source
  kubernetes` (its informers on the Secret, ConfigMap, Sandboxes and pods), and Envoy.
- The official Python `e2b` SDK driving them: create, run a command, kill.

What is stood in:
- The CRDs (crds/): the real group/version/kind/plural of agent-sandbox's Sandbox and
  SandboxClaim and AgentCube's CodeInterpreter, with no schema
  (x-kubernetes-preserve-unknown-fields). They are not the upstream CRDs.
- No agent-sandbox controller runs. By default standin.py does its job and a node's: it
  creates the Pod for each Sandbox on a registered stand-in Node, runs picod as a local process
  on 127.102.x.y and writes the Pod Ready with that podIP (as tests/e2e_k8s's fake kubelet does
  against kmock). With `AGENTCUBE_E2B_SANDBOX_IMAGE=<image>` the test itself still makes the
  Pod (there is no controller), but binds it to k3s's own node, so k3s's kubelet runs the real
  sandbox image (k8s/sandbox-image; imported from the local Docker engine into k3s's
  containerd when present there); then the host must reach pod IPs, so this mode adds a
  route for k3s's pod CIDR via the container's address and needs root on Linux (skipped
  otherwise).
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from kubernetes.client import ApiClient, ApiextensionsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from e2e_k8s.conftest import (
    AGENTCUBE_NAMESPACE,
    CODE_INTERPRETER,
    SYSTEM_NAMESPACE,
    TENANT,
    Cluster,
    agentcube_identity,
    running_gateway,
    wait_until,
)
from extproc.k8s.client import api_client
from support.crds import load_crds
from support.gateway import sdk_environment

ENABLE_ENV = "AGENTCUBE_E2B_K3S"
K3S_IMAGE_ENV = "AGENTCUBE_E2B_K3S_IMAGE"
SANDBOX_IMAGE_ENV = "AGENTCUBE_E2B_SANDBOX_IMAGE"
DEFAULT_K3S_IMAGE = "rancher/k3s:v1.31.4-k3s1"
POD_CIDR = "10.42.0.0/16"  # k3s's default cluster CIDR
SETUP_TIMEOUT_S = 120.0
SKIP_DISABLED = f"set {ENABLE_ENV}=1 to run"


def docker_engine_error() -> str | None:
    """None when a Docker engine answers GET /_ping, else why not. A plain socket, not the
    docker package or httpx (both leave a socket unclosed when the engine is absent)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    url = urlsplit(host)
    try:
        if url.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            address: Any = url.path
        elif url.scheme == "tcp" and url.hostname and url.port:
            sock = socket.socket(socket.AF_INET6 if ":" in url.hostname else socket.AF_INET)
            sock.settimeout(5)
            address = (url.hostname, url.port)
        else:
            return f"DOCKER_HOST={host}: only unix:// and tcp://HOST:PORT engines are probed"
        with sock:
            sock.connect(address)
            if os.environ.get("DOCKER_TLS_VERIFY"):
                return None  # TLS engine: the port answers; testcontainers does the handshake
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError as error:
        return f"{host}: {error}"
    if status.split()[1:2] != ["200"]:
        return f"{host}: GET /_ping answered {status!r}"
    return None


def enabled_or_skip() -> None:
    """pytest.skip with the reason unless the suite is opted in and Docker answers."""
    if os.environ.get(ENABLE_ENV) != "1":
        pytest.skip(SKIP_DISABLED)
    error = docker_engine_error()
    if error is not None:
        pytest.skip(f"no Docker engine: {error}")
    if os.environ.get(SANDBOX_IMAGE_ENV) and not (sys.platform == "linux" and os.geteuid() == 0):
        pytest.skip(
            f"{SANDBOX_IMAGE_ENV} runs the real image in k3s: routing its pod IPs to this host "
            "needs root on Linux"
        )


@dataclass
class K3s:
    """What tests/e2e_k8s's gateway helpers use of their Cluster: a kubeconfig and a client."""

    kubeconfig: Path
    directory: Path
    container: Any
    sandbox_image: str | None
    cleanups: list[Any] = field(default_factory=list)

    def client(self) -> ApiClient:
        return api_client(self.kubeconfig)

    def as_cluster(self) -> Cluster:
        # running_gateway reads only .kubeconfig and .client() (duck-typed on purpose)
        return cast(Cluster, self)


# --- preparing the cluster ------------------------------------------------------------------


def apply_crds(client: ApiClient) -> None:
    """The structural CRDs the fake API enforces too (tests/support/crds): agent-sandbox
    v0.4.6, AgentCube's CodeInterpreter."""
    api = ApiextensionsV1Api(client)
    names = []
    for crd in load_crds("agent-sandbox-v0.4.6", "agentcube"):
        api.create_custom_resource_definition(crd)
        names.append(crd["metadata"]["name"])

    def established() -> bool:
        for name in names:
            conditions = api.read_custom_resource_definition(name).status.conditions or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                return False
        return True

    wait_until(established, SETUP_TIMEOUT_S, interval_s=0.2)


def create_namespaces(client: ApiClient, *names: str) -> None:
    core = CoreV1Api(client)
    for name in names:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def default_accounts() -> bool:
        # pod admission needs the namespace's `default` ServiceAccount
        try:
            for name in names:
                core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_until(default_accounts, SETUP_TIMEOUT_S, interval_s=0.2)


def code_interpreter(sandbox_image: str | None) -> dict[str, Any]:
    ci = copy.deepcopy(CODE_INTERPRETER)
    del ci["metadata"]["uid"]  # the API server assigns it
    if sandbox_image:
        ci["spec"]["template"]["image"] = sandbox_image
    return ci


def import_image(container: Any, image: str, directory: Path) -> None:
    """Copy `image` from the local Docker engine into k3s's containerd, when it is there
    (otherwise k3s pulls it, imagePullPolicy IfNotPresent)."""
    import docker  # lazily: only on the enabled path

    engine = docker.from_env()
    try:
        try:
            local = engine.images.get(image)
        except docker.errors.ImageNotFound:
            return
        saved = directory / "image.tar"
        with saved.open("wb") as sink:
            for chunk in local.save(named=True):
                sink.write(chunk)
        wrapped = directory / "image-archive.tar"
        with tarfile.open(wrapped, "w") as archive:
            archive.add(saved, arcname="agentcube-e2b-image.tar")
        with wrapped.open("rb") as source:
            container.get_wrapped_container().put_archive("/tmp", source)
        code, output = container.exec(
            ["ctr", "-n", "k8s.io", "images", "import", "/tmp/agentcube-e2b-image.tar"]
        )
        assert code == 0, output
    finally:
        engine.close()


def route_pod_network(container: Any) -> list[str]:
    """Route k3s's pod CIDR through the container's address; the command that undoes it."""
    inspected = container.get_docker_client().client.api.inspect_container(
        container.get_wrapped_container().id
    )
    networks = inspected["NetworkSettings"]["Networks"]
    address = next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))
    subprocess.run(["ip", "route", "replace", POD_CIDR, "via", address], check=True)
    return ["ip", "route", "del", POD_CIDR, "via", address]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K3s]:
    enabled_or_skip()
    from testcontainers.community.k3s import K3SContainer  # lazily: Docker is optional

    directory = tmp_path_factory.mktemp("k3s")
    sandbox_image = os.environ.get(SANDBOX_IMAGE_ENV) or None
    container = K3SContainer(image=os.environ.get(K3S_IMAGE_ENV) or DEFAULT_K3S_IMAGE)
    container.start()
    undo_route: list[str] | None = None
    try:
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(container.config_yaml())
        kubeconfig.chmod(0o600)
        cluster = K3s(kubeconfig, directory, container, sandbox_image)
        with cluster.client() as client:
            apply_crds(client)
            create_namespaces(client, SYSTEM_NAMESPACE, TENANT, AGENTCUBE_NAMESPACE)
            # AgentCube's router identity, where AgentCube keeps it: the gateway reads it.
            CoreV1Api(client).create_namespaced_secret(AGENTCUBE_NAMESPACE, agentcube_identity())
            CustomObjectsApi(client).create_namespaced_custom_object(
                "runtime.agentcube.volcano.sh",
                "v1alpha1",
                TENANT,
                "codeinterpreters",
                code_interpreter(sandbox_image),
            )
        if sandbox_image:
            import_image(container, sandbox_image, directory)
            undo_route = route_pod_network(container)
        yield cluster
    finally:
        if undo_route is not None:
            subprocess.run(undo_route, check=False)
        container.stop()


@pytest.fixture(scope="package")
def kube(k3s: K3s) -> Iterator[ApiClient]:
    with k3s.client() as client:
        yield client


@pytest.fixture(scope="package")
def sandboxes_run(k3s: K3s, kube: ApiClient) -> Iterator[None]:
    """Who makes a Sandbox's pod: standin.py (picod on this host), or, with a real image, a
    small loop that creates the Pod for k3s's kubelet (no agent-sandbox controller runs)."""
    from k3s.standin import StandInKubelet

    maker = StandInKubelet(kube, k3s.directory / "pods", local=not k3s.sandbox_image)
    maker.start()
    try:
        yield
    finally:
        maker.stop()


@dataclass(frozen=True)
class K3sGateway:
    url: str
    api_key: str
    env: dict[str, str]


@pytest.fixture(scope="package")
def gateway(
    k3s: K3s, sandboxes_run: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[K3sGateway]:
    directory = tmp_path_factory.mktemp("k3s-gateway")
    with running_gateway(k3s.as_cluster(), directory, (TENANT,)) as (at, keys, _):
        url = f"http://{at['listen']}"
        env = {
            "E2B_API_URL": url,
            "E2B_SANDBOX_URL": url,
            "E2B_DOMAIN": "e2b.localhost",
            "E2B_API_KEY": keys[TENANT],
        }
        with sdk_environment(env):
            yield K3sGateway(url, keys[TENANT], env)


def wait_gone(read: Any, timeout_s: float) -> None:
    """Until `read()` raises 404."""

    def gone() -> bool:
        try:
            read()
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_until(gone, timeout_s, interval_s=0.1)
