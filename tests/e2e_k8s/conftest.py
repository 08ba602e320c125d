"""The gateway in Kubernetes mode against a fake cluster, once per package.

- `cluster`: a helper process (cluster.py) serving the fake Kubernetes API over HTTP on
  127.0.0.1 and running the fake kubelet (a real picod per Sandbox on 127.101.x.y:49983),
  preloaded with CodeInterpreter `base` in tenant namespace `team-a` and AgentCube's identity
  Secret in namespace `agentcube` (as AgentCube's router makes it); and a kubeconfig for it.
- `gateway`: the lifecycle service (`--backend kubernetes`), the edge (keys and routing
  directory from the cluster) and Envoy, started as up.py starts them, each in its own
  process group, each waited on (gRPC health SERVING, Envoy /ready); API keys created with
  `agentcube-e2b keys create --kubernetes`. The SDK environment is set for this package only.

Everything but the API server and the kubelet is the production code path.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes.client import ApiClient, CoreV1Api

from extproc.cli import main as cli_main
from extproc.k8s.client import api_client
from support.gateway import CLI, envoy_argv, sdk_environment
from support.processes import free_port, spawn_logged, wait_healthy, wait_until  # noqa: F401

TESTS = Path(__file__).resolve().parent.parent
SYSTEM_NAMESPACE = "agentcube-system"
TENANT = "team-a"
OTHER_TENANT = "team-b"
TEMPLATE = "base"
DOMAIN = "e2b.localhost"
GATEWAY_IMAGE = "registry.test/agentcube-e2b:test"  # carries picod's bundle
IDENTITY_SECRET = "picod-router-identity"
AGENTCUBE_NAMESPACE = "agentcube"  # where AgentCube's router keeps IDENTITY_SECRET
SANDBOX_API = ("agents.x-k8s.io", "v1alpha1", "sandboxes")
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0

POOLED = "pooled"
# The agent-sandbox releases the gateway is run against: the one AgentCube pins (v1alpha1
# only) and a 0.5.x (v1beta1 storage, v1alpha1 converted).
RELEASES = ("0.4.6", "0.5.6")


def code_interpreter(name: str, **spec: Any) -> dict[str, Any]:
    """A CodeInterpreter as AgentCube's CRD defines it (fields of the upstream facts only)."""
    return {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "CodeInterpreter",
        "metadata": {"name": name, "namespace": TENANT, "uid": f"ci-{name}"},
        "spec": {
            "ports": [{"port": 49983, "protocol": "HTTP", "pathPrefix": "/"}],
            "template": {"image": "agentcube-e2b-sandbox:0.1.0", "imagePullPolicy": "IfNotPresent"},
            "sessionTimeout": "15m",
            "maxSessionDuration": "8h",
            "authMode": "picod",
            **spec,
        },
    }


CODE_INTERPRETER = code_interpreter(TEMPLATE)
# Served from AgentCube's warm pool of one: its controller makes the SandboxTemplate and
# SandboxWarmPool, with the key from AgentCube's namespace.
POOLED_INTERPRETER = code_interpreter(POOLED, warmPoolSize=1)


def child_env() -> dict[str, str]:
    """This environment without anything that points a child at another cluster or gateway."""
    drop = ("E2B_", "KUBERNETES_", "AGENTCUBE_E2B_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "KUBECONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def stop_group(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the process group, SIGKILL it after `grace_s`; the exit status."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
        raise


def stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, int | None]:
    """Stop each, last started first; a process that needed SIGKILL has code None."""
    codes: dict[str, int | None] = {}
    for name, process in reversed(processes.items()):
        try:
            codes[name] = stop_group(process)
        except subprocess.TimeoutExpired:
            codes[name] = None
    return codes


def processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of live processes whose argv contains `text` (a temp path of
    ours, so only processes this session started)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv:
            found[int(entry.name)] = argv.strip()
    return found


# --- the fake cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    url: str
    kubeconfig: Path
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    release: str  # the agent-sandbox release the fake controllers play
    images: Path  # the node's pushed images (kubelet.push_image), read at each pull

    def client(self) -> ApiClient:
        """The official client, configured from the kubeconfig as the gateway's processes are."""
        return api_client(self.kubeconfig)


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "fake", "namespace": SYSTEM_NAMESPACE},
            }
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def start_cluster(
    directory: Path, preload: list[dict[str, Any]], release: str = RELEASES[0]
) -> Cluster:
    root = directory / "pods"
    root.mkdir(parents=True)
    preload_file = directory / "preload.json"
    preload_file.write_text(json.dumps(preload))
    log = directory / "cluster.log"
    argv = [sys.executable, "-m", "e2e_k8s.cluster", "--root", str(root)]
    argv += ["--preload", str(preload_file), "--agent-sandbox", release]
    argv += ["--agentcube-namespace", AGENTCUBE_NAMESPACE]
    images = directory / "images.json"  # none yet: a test that needs images pushes them
    argv += ["--images", str(images)]
    with log.open("wb") as err:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    if line[:1] != ["listening"]:
        stop_group(process)
        raise RuntimeError(f"fake cluster did not start:\n{log.read_text()[-4000:]}")
    url = f"http://127.0.0.1:{line[1]}"
    kubeconfig = write_kubeconfig(directory / "kubeconfig", url)
    return Cluster(url, kubeconfig, root, log, process, release, images)


def stop_cluster(cluster: Cluster) -> None:
    code = stop_all({"cluster": cluster.process})["cluster"]
    if cluster.process.stdout is not None:
        cluster.process.stdout.close()
    # The kubelet stops every picod it started before it exits; kill any it did not.
    left = processes_mentioning(str(cluster.root))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert code == 0, cluster.log.read_text()[-4000:]
    assert left == {}, left


def agentcube_identity() -> dict[str, Any]:
    """Secret picod-router-identity as AgentCube's router makes it in its namespace (RSA-2048,
    PKCS#1 + PKIX, its labels): the key its warm-pool pods trust, which the lifecycle and the
    edge read from there."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": IDENTITY_SECRET,
            "namespace": AGENTCUBE_NAMESPACE,
            "labels": {"app": "agentcube", "component": "router"},
        },
        "data": {
            "private.pem": base64.b64encode(private).decode(),
            "public.pem": base64.b64encode(public).decode(),
        },
    }


@pytest.fixture(scope="package", params=RELEASES, ids=lambda r: f"agent-sandbox-{r}")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    running = start_cluster(
        tmp_path_factory.mktemp("cluster"),
        [
            {"plural": "secrets", "object": agentcube_identity()},
            {"plural": "codeinterpreters", "object": CODE_INTERPRETER},
            {"plural": "codeinterpreters", "object": POOLED_INTERPRETER},
        ],
        request.param,
    )
    try:
        yield running
    finally:
        stop_cluster(running)


@pytest.fixture(scope="package")
def kube(cluster: Cluster) -> Iterator[ApiClient]:
    with cluster.client() as client:
        yield client


def get_sandbox_cr(kube: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    from e2e_k8s.objects_api import SANDBOXES, get_object

    return get_object(kube, SANDBOXES, namespace, name)


def pod_ip(kube: ApiClient, namespace: str, name: str) -> str | None:
    from kubernetes.client.exceptions import ApiException

    try:
        pod = CoreV1Api(kube).read_namespaced_pod(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    ip: str | None = pod.status.pod_ip if pod.status else None
    return ip


# --- the gateway -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    url: str
    admin: str
    lifecycle: str
    edge: str
    directory: Path
    cluster: Cluster
    api_key: str
    other_tenant_key: str
    # name -> pid of the lifecycle, edge and Envoy (each leads its process group)
    pids: dict[str, int]

    @property
    def env(self) -> dict[str, str]:
        return {
            "E2B_API_URL": self.url,
            "E2B_SANDBOX_URL": self.url,
            "E2B_DOMAIN": DOMAIN,
            "E2B_API_KEY": self.api_key,
        }

    def keys(self, *args: str) -> str:
        return keys_cli(self.cluster, *args)

    def create_key(self, namespace: str) -> str:
        return create_key(self.cluster, namespace)


def _keys_argv(cluster: Cluster, *args: str) -> list[str]:
    return ["keys", *args, "--kubernetes", "--kubeconfig", str(cluster.kubeconfig),
            "--keys-namespace", SYSTEM_NAMESPACE]  # fmt: skip


def keys_cli(cluster: Cluster, *args: str) -> str:
    """`agentcube-e2b keys ... --kubernetes` against the fake cluster; its stdout."""
    done = subprocess.run(
        [*CLI, *_keys_argv(cluster, *args)],
        capture_output=True, text=True, timeout=30, env=child_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_key(cluster: Cluster, namespace: str) -> str:
    """`keys create`, run in this process: a CLI process of its own spends seconds importing
    the Kubernetes client this one has loaded already (its flags name the cluster, so the
    environment child_env() would clean does not matter)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(_keys_argv(cluster, "create", "--namespace", namespace))
    assert code == 0, out.getvalue()
    return next(word for word in out.getvalue().split() if word.startswith("e2b_"))


def at(port: int) -> str:
    return f"127.0.0.1:{port}"


def _commands(
    ports: dict[str, int], kubeconfig: Path, envoy_yaml: Path, edge_state: Path
) -> dict[str, list[str]]:
    addr = {name: at(port) for name, port in ports.items()}
    return {
        "lifecycle": [
            *CLI, "lifecycle",
            "--backend", "kubernetes",
            "--kubeconfig", str(kubeconfig),
            # its own Secrets (seed, proof key, TLS) here; AgentCube's identity there
            "--namespace", SYSTEM_NAMESPACE,
            "--identity-namespace", AGENTCUBE_NAMESPACE,
            # a pod the fake kubelet cannot start fails the test in seconds, not minutes
            "--ready-timeout", "20",
            # from_image templates inject picod from this image (a test pushes it to the
            # node: test_templates_from_image.py)
            "--picod-bundle-image", GATEWAY_IMAGE,
            # mutual TLS (Secret e2b-lifecycle-tls, made at start), as in the Deployment;
            # plaintext health for the start-up wait, as kubelet's probe
            "--listen", addr["lifecycle"],
            "--health-listen", addr["lifecycle_health"],
        ],
        "edge": [
            *CLI, "edge",
            "--listen", addr["edge"],
            # an IP target: the edge checks the lifecycle's certificate by its service name
            "--lifecycle", addr["lifecycle"],
            "--domain", DOMAIN,
            "--metrics-listen", addr["metrics"],
            "--keys-source", "kubernetes",
            "--keys-namespace", SYSTEM_NAMESPACE,
            "--directory-source", "kubernetes",
            "--kubeconfig", str(kubeconfig),
            # the TLS and proof-key Secrets here, AgentCube's identity there, all read
            # through the API at start
            "--namespace", SYSTEM_NAMESPACE,
            "--identity-namespace", AGENTCUBE_NAMESPACE,
            # nothing is kept here in Kubernetes mode; named so nothing lands in the cwd
            "--state-dir", str(edge_state),
        ],
        "envoy": envoy_argv(envoy_yaml, concurrency=2, log_level="warning"),
    }  # fmt: skip


def wait_grpc_serving(
    process: subprocess.Popen[bytes], target: str, timeout_s: float = START_TIMEOUT_S
) -> None:
    """Until grpc.health.v1 Check says SERVING (the process starting: nothing to subscribe to
    before its port is open, so poll)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{target}: exited with {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target}: not SERVING within {timeout_s:g} s")
            time.sleep(0.05)


@contextlib.contextmanager
def running_gateway(
    cluster: Cluster, directory: Path, tenants: tuple[str, ...]
) -> Iterator[tuple[dict[str, str], dict[str, str], dict[str, int]]]:
    """lifecycle, edge and Envoy up, and a key per tenant created (while the lifecycle
    service starts: the edge reports SERVING once it has read them); yields their addresses,
    tenant -> key and their pids; stops every group on exit."""
    names = ("lifecycle", "lifecycle_health", "edge", "metrics", "listen", "admin")
    ports = {name: free_port() for name in names}
    envoy_yaml = directory / "envoy.yaml"
    # In this process: the command's own interpreter would spend seconds importing what
    # this one has imported once (envoy-data-plane), for every release.
    assert cli_main([
        "envoy-config",
        "--listen", at(ports["listen"]),
        "--admin", at(ports["admin"]),
        "--edge", at(ports["edge"]),
        "--domain", DOMAIN,
        "-o", str(envoy_yaml),
    ]) == 0  # fmt: skip
    commands = _commands(ports, cluster.kubeconfig, envoy_yaml, directory / "edge-state")
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> subprocess.Popen[bytes]:
        processes[name] = spawn_logged(commands[name], directory / f"{name}.log", child_env())
        return processes[name]

    try:
        try:
            start("envoy")  # needs nothing else to become ready
            start("lifecycle")
            keys = {tenant: create_key(cluster, tenant) for tenant in tenants}
            wait_grpc_serving(processes["lifecycle"], at(ports["lifecycle_health"]))
            wait_grpc_serving(start("edge"), at(ports["edge"]))
            wait_healthy(
                processes["envoy"],
                f"http://{at(ports['admin'])}/ready",
                200,
                timeout_s=START_TIMEOUT_S,
                interval_s=0.05,
            )
        except Exception as error:
            logs = "\n".join(
                f"--- {name}.log\n{(directory / f'{name}.log').read_text()[-3000:]}"
                for name in processes
            )
            raise RuntimeError(f"gateway did not start: {error}\n{logs}") from error
        pids = {name: process.pid for name, process in processes.items()}
        yield {name: at(port) for name, port in ports.items()}, keys, pids
    finally:
        codes = stop_all(processes)
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(scope="package")
def gateway(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("gateway")
    with running_gateway(cluster, directory, (TENANT, OTHER_TENANT)) as (at, keys, pids):
        gateway = Gateway(
            url=f"http://{at['listen']}",
            admin=at["admin"],
            lifecycle=at["lifecycle"],
            edge=at["edge"],
            directory=directory,
            cluster=cluster,
            api_key=keys[TENANT],
            other_tenant_key=keys[OTHER_TENANT],
            pids=pids,
        )
        with sdk_environment(gateway.env):  # for this package only
            yield gateway
