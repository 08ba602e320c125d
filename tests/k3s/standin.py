"""The stand-in for agent-sandbox's controller and a node, against a real k3s API server.

No agent-sandbox controller runs in the k3s of tests/k3s, and the CRDs are stand-ins
(crds/). So, as tests/e2e_k8s/kubelet.py does for the fake API, this does by hand what the
controller and a kubelet would, only through the real API server and the official client:

- It registers a Node `agentcube-e2b-stand-in` (tainted NoSchedule, so the scheduler puts
  nothing else there), posts its Ready condition and renews its Lease every few seconds, so
  the node lifecycle controller leaves it and its pods alone.
- It lists and watches Sandboxes (`agents.x-k8s.io/v1alpha1`) cluster-wide. For each new one it
  creates the Pod (named after the Sandbox, `spec.podTemplate`, owned by the Sandbox, bound to
  the stand-in node so k3s's own kubelet never runs it), starts the container's picod as a
  local process on a loopback address of its own (127.102.x.y:49983), and once picod answers
  GET /health it writes the Pod's status Running and Ready with that `podIP` (status
  subresource) and the Sandbox's Ready condition. When a Sandbox is deleted it stops picod and
  deletes the Pod (k3s's garbage collector would too, through the owner reference).

With `local=False` (a real sandbox image configured) it only creates each Sandbox's Pod,
unbound, and deletes it with the Sandbox: k3s's scheduler and kubelet run the image and
report it Ready.

The lifecycle service and the edge see only what the API server serves them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes import watch
from kubernetes.client import ApiClient, CoordinationV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from e2e_k8s.kubelet import picod_argv

Obj = dict[str, Any]
log = logging.getLogger("k3s-stand-in")

GROUP, VERSION, PLURAL = "agents.x-k8s.io", "v1alpha1", "sandboxes"
NODE = "agentcube-e2b-stand-in"
TAINT = "agentcube-e2b/stand-in"
PICOD_PORT = 49983
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
HEARTBEAT_S = 5.0


def now(micro: bool = False) -> str:
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def loopback_addresses() -> Iterator[str]:
    """127.102.0.1, 127.102.0.2, ...: never reused (tests/e2e_k8s uses 127.101.x.y)."""
    for third in range(256):
        for fourth in range(1, 255):
            yield f"127.102.{third}.{fourth}"


@dataclass
class PodProcess:
    namespace: str
    name: str
    ip: str
    process: subprocess.Popen[bytes] | None = None
    starting: threading.Thread | None = None
    deleted: threading.Event = field(default_factory=threading.Event)


class StandInKubelet:
    def __init__(self, client: ApiClient, root: Path, *, local: bool = True) -> None:
        """`local`: run picod here on a stand-in node; else only create the Pod, unbound,
        for k3s's scheduler and kubelet to run the real sandbox image."""
        self.local = local
        self.core = CoreV1Api(client)
        self.custom = CustomObjectsApi(client)
        self.leases = CoordinationV1Api(client)
        self.root = root
        self.pods: dict[tuple[str, str], PodProcess] = {}
        self._lock = threading.Lock()
        self._addresses = loopback_addresses()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: watch.Watch | None = None

    # -- the node ------------------------------------------------------------------------
    def register_node(self) -> None:
        self.core.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
                "spec": {"taints": [{"key": TAINT, "value": "true", "effect": "NoSchedule"}]},
            }
        )
        self.leases.create_namespaced_lease(
            "kube-node-lease",
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": NODE, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": NODE,
                    "leaseDurationSeconds": 40,
                    "renewTime": now(micro=True),
                },
            },
        )
        self._heartbeat()

    def _heartbeat(self) -> None:
        stamp = now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "StandInReady",
            "message": "tests/k3s stand-in node (no kubelet)",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        self.core.patch_node_status(
            NODE,
            {
                "status": {
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                }
            },
        )
        self.leases.patch_namespaced_lease(
            NODE, "kube-node-lease", {"spec": {"renewTime": now(micro=True)}}
        )

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._heartbeat()
            except Exception:
                log.exception("node heartbeat failed")

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        if self.local:
            self.register_node()
        for target in (self._follow, self._beat) if self.local else (self._follow,):
            thread = threading.Thread(target=target, name=f"stand-in{target.__name__}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._lock:
            pods, self.pods = list(self.pods.values()), {}
        for pod in pods:
            self._stop_pod(pod)
        if not self.local:
            return
        with contextlib.suppress(ApiException):
            self.core.delete_node(NODE)
        with contextlib.suppress(ApiException):
            self.leases.delete_namespaced_lease(NODE, "kube-node-lease")

    def _follow(self) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone or an error."""
        while not self._stop.is_set():
            try:
                listing = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                present = {self._key(obj) for obj in listing["items"]}
                for obj in listing["items"]:
                    self._added(obj)
                for key in set(self.pods) - present:
                    self._deleted(key)
                version = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    self._watch = watch.Watch()
                    for event in self._watch.stream(
                        self.custom.list_cluster_custom_object,
                        GROUP,
                        VERSION,
                        PLURAL,
                        resource_version=version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=2,
                    ):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            raise ApiException(status=obj.get("code"), reason=obj.get("reason"))
                        version = obj["metadata"]["resourceVersion"]
                        if kind == "ADDED":
                            self._added(obj)
                        elif kind == "DELETED":
                            self._deleted(self._key(obj))
            except ApiException as error:
                if error.status != 410:
                    log.warning("sandbox watch failed: %s", error)
                    self._stop.wait(0.5)
            except Exception:
                if not self._stop.is_set():
                    log.exception("sandbox watch failed")
                    self._stop.wait(0.5)

    @staticmethod
    def _key(obj: Obj) -> tuple[str, str]:
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def _added(self, sandbox: Obj) -> None:
        key = self._key(sandbox)
        with self._lock:
            if key in self.pods or self._stop.is_set():
                return
            pod = PodProcess(key[0], key[1], next(self._addresses))
            self.pods[key] = pod
        pod.starting = threading.Thread(target=self._run_pod, args=(sandbox, pod), daemon=True)
        pod.starting.start()

    def _deleted(self, key: tuple[str, str]) -> None:
        with self._lock:
            pod = self.pods.pop(key, None)
        if pod is not None:
            threading.Thread(target=self._stop_pod, args=(pod,), daemon=True).start()

    def _env_values(self, namespace: str, container: Obj) -> dict[str, str]:
        """`value`s and `secretKeyRef`s, as a kubelet resolves them (the lifecycle writes a
        sandbox's Secret before its Sandbox, so it is there)."""
        values: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                values[item["name"]] = str(item["value"])
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = self.core.read_namespaced_secret(ref["name"], namespace)
                values[item["name"]] = base64.b64decode((secret.data or {})[ref["key"]]).decode()
        return values

    # -- one pod -------------------------------------------------------------------------
    def _run_pod(self, sandbox: Obj, pod: PodProcess) -> None:
        try:
            self._start_pod(sandbox, pod)
        except Exception:
            log.exception("stand-in pod %s/%s failed", pod.namespace, pod.name)

    def _start_pod(self, sandbox: Obj, pod: PodProcess) -> None:
        template = (sandbox.get("spec") or {}).get("podTemplate") or {}
        template_meta = template.get("metadata") or {}
        spec = dict(template.get("spec") or {})
        container = (spec.get("containers") or [{}])[0]
        spec["automountServiceAccountToken"] = False
        if self.local:
            spec["nodeName"] = NODE
            spec["tolerations"] = [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]
        self.core.create_namespaced_pod(
            pod.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "labels": dict(template_meta.get("labels") or {}),
                    "annotations": dict(template_meta.get("annotations") or {}),
                    "ownerReferences": [
                        {
                            "apiVersion": f"{GROUP}/{VERSION}",
                            "kind": "Sandbox",
                            "name": pod.name,
                            "uid": sandbox["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": spec,
            },
        )
        if not self.local:
            return  # k3s's kubelet runs it and reports it Ready
        home = self.root / pod.namespace / pod.name / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        env.update(self._env_values(pod.namespace, container))
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        with self._lock:
            if pod.deleted.is_set():
                return
            with (home.parent / "picod.log").open("ab") as sink:
                pod.process = subprocess.Popen(
                    picod_argv(container, pod.ip, home),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(home),
                    start_new_session=True,
                )
        if not self._wait_serving(pod) or pod.deleted.is_set():
            return
        stamp = now()
        self.core.patch_namespaced_pod_status(
            pod.name,
            pod.namespace,
            {
                "status": {
                    "phase": "Running",
                    "hostIP": "127.0.0.1",
                    "podIP": pod.ip,
                    "podIPs": [{"ip": pod.ip}],
                    "startTime": stamp,
                    "conditions": [
                        {"type": kind, "status": "True", "lastTransitionTime": stamp}
                        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                }
            },
        )
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            pod.namespace,
            PLURAL,
            pod.name,
            {
                "status": {
                    "replicas": 1,
                    "podIPs": [pod.ip],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "DependenciesReady",
                            "message": "",
                            "lastTransitionTime": stamp,
                        }
                    ],
                }
            },
        )

    def _wait_serving(self, pod: PodProcess) -> bool:
        """The readiness probe: GET /health until 204, while the process lives."""
        url = f"http://{pod.ip}:{PICOD_PORT}/health"
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline and not pod.deleted.is_set():
                assert pod.process is not None
                if pod.process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get(url).status_code == 204:
                        return True
                pod.deleted.wait(0.05)
        return False

    def _stop_pod(self, pod: PodProcess) -> None:
        with self._lock:
            pod.deleted.set()
        if pod.starting is not None and pod.starting is not threading.current_thread():
            pod.starting.join(timeout=READY_TIMEOUT_S + 5)
        process = pod.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                pod.name, pod.namespace, grace_period_seconds=0 if self.local else None
            )
