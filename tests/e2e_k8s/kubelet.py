"""A fake kubelet: agent-sandbox's controller and a node, for one fake Kubernetes API.

For each Sandbox (`agents.x-k8s.io/v1alpha1`) it sees, it does what the controller and the
kubelet would: writes the Pod (named after the Sandbox, labels and annotations from
`spec.podTemplate`, Pending), starts the container's picod as a real process on a loopback
address of its own (127.101.x.y, so every "pod" can listen on envd's 49983), and once picod
answers GET /health it writes the Pod Running and Ready with `status.podIP` = that address,
and the Sandbox's Ready condition. When the Sandbox is deleted it stops picod and deletes the
Pod. The lifecycle service and the edge see only the API objects, as in a cluster.

It learns about Sandboxes from the fake's change listeners (tests/support/kubeapi.py) and
writes through its in-process `put`/`delete`, on the loop: the watch events the lifecycle
service and the edge receive are the ones those writes produce.
Container env is resolved as a kubelet would: `value`, `valueFrom.secretKeyRef`,
`valueFrom.configMapKeyRef` and the `fieldRef`s picod could need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

Obj = dict[str, Any]
log = logging.getLogger("fake-kubelet")

GROUP, VERSION, PLURAL = "agents.x-k8s.io", "v1alpha1", "sandboxes"
PICOD_PORT = 49983
PICOD = [sys.executable, "-m", "extproc.cli", "picod"]
# Flags the kubelet sets itself: the pod's own address, and a home that exists on this host.
_OWN_FLAGS = ("--listen", "--home")
_READY_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0


class Store(Protocol):
    """What the kubelet needs from the fake API (tests/support/kubeapi.py)."""

    objects: dict[str, dict[tuple[str, str], Obj]]
    listeners: list[Callable[[str, str, Obj], None]]

    def put(self, plural: str, obj: Obj) -> int: ...

    def delete(self, plural: str, namespace: str, name: str) -> int: ...


def loopback_addresses() -> Iterator[str]:
    """127.101.0.1, 127.101.0.2, ...: never reused within one kubelet."""
    for third in range(256):
        for fourth in range(1, 255):
            yield f"127.101.{third}.{fourth}"


@dataclass
class PodProcess:
    namespace: str
    name: str
    ip: str
    process: asyncio.subprocess.Process | None = None
    # the task starting it; deleting the Sandbox sets `deleted` and waits for this task
    starting: asyncio.Task[None] | None = None
    deleted: bool = False


def picod_refuses(ip: str) -> bool:
    """Whether a connection to picod's port at `ip` is refused (the pod's picod is gone)."""
    try:
        socket.create_connection((ip, PICOD_PORT), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def picod_argv(container: Obj, ip: str, home: Path) -> list[str]:
    """The container's picod flags (after a `picod` word in command+args, else its args),
    with --listen and --home set to this pod's address and a host directory."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    if "picod" in words:
        words = words[words.index("picod") + 1 :]
    elif container.get("command"):
        words = [str(w) for w in container.get("args") or []]
    flags: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in _OWN_FLAGS:
            skip = "=" not in word
            continue
        flags.append(word)
    return [*PICOD, *flags, "--listen", f"{ip}:{PICOD_PORT}", "--home", str(home)]


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("kubelet task failed", exc_info=error)


class Kubelet:
    def __init__(self, api: Store, root: Path) -> None:
        self.api = api
        self.root = root
        self.pods: dict[tuple[str, str], PodProcess] = {}
        self._addresses = loopback_addresses()
        self._events: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- watching ------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Follow Sandboxes from now on (and those already there); returns the dispatching
        task, which the caller cancels after `stop`."""
        for obj in list(self.api.objects.get(PLURAL, {}).values()):
            self._events.put_nowait(("ADDED", copy.deepcopy(obj)))
        self.api.listeners.append(self._on_change)
        return asyncio.create_task(self._dispatch(), name="kubelet-dispatch")

    def _on_change(self, plural: str, kind: str, obj: Obj) -> None:
        # Called by the fake inside each write, on the loop: only queue, never write back.
        if plural == PLURAL and not self._stopping:
            self._events.put_nowait((kind, obj))

    async def _dispatch(self) -> None:
        while True:
            kind, obj = await self._events.get()
            metadata = obj["metadata"]
            key = (metadata.get("namespace", ""), metadata["name"])
            if kind == "ADDED" and key not in self.pods:
                pod = PodProcess(key[0], key[1], next(self._addresses))
                self.pods[key] = pod
                pod.starting = self._spawn(self._run_pod(obj, pod))
            elif kind == "DELETED" and key in self.pods:
                self._spawn(self._stop_pod(self.pods.pop(key)))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def stop(self) -> None:
        """Stop watching and every picod; the API must stop afterwards to end the watch.
        Nothing is cancelled mid-spawn (that could orphan a picod): starts see `deleted`."""
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.api.listeners.remove(self._on_change)
        pods, self.pods = list(self.pods.values()), {}
        await asyncio.gather(*(self._stop_pod(pod) for pod in pods))
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- one pod -------------------------------------------------------------------------
    async def _run_pod(self, sandbox: Obj, pod: PodProcess) -> None:
        template = (sandbox.get("spec") or {}).get("podTemplate") or {}
        spec = template.get("spec") or {}
        containers = spec.get("containers") or [{}]
        self._write_pod(sandbox, template, pod, ready=False)
        home = self.root / pod.namespace / pod.name / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        env.update(self._container_env(containers[0], pod))
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        with (home.parent / "picod.log").open("ab") as sink:
            pod.process = await asyncio.create_subprocess_exec(
                *picod_argv(containers[0], pod.ip, home),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(home),
                start_new_session=True,
            )
        if not await self._wait_serving(pod):
            if not pod.deleted:
                log.warning("picod of %s/%s did not become ready", pod.namespace, pod.name)
            return
        if not pod.deleted:
            self._write_pod(sandbox, template, pod, ready=True)
            self._mark_sandbox_ready(pod)

    async def _wait_serving(self, pod: PodProcess) -> bool:
        """The readiness probe: GET /health until 204, while the process lives."""
        url = f"http://{pod.ip}:{PICOD_PORT}/health"
        deadline = asyncio.get_running_loop().time() + _READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1.0) as client:
            while asyncio.get_running_loop().time() < deadline and not pod.deleted:
                assert pod.process is not None
                if pod.process.returncode is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(url)).status_code == 204:
                        return True
                await asyncio.sleep(0.02)
        return False

    async def _stop_pod(self, pod: PodProcess) -> None:
        pod.deleted = True
        if pod.starting is not None:
            await asyncio.wait([pod.starting])
        process = pod.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        with contextlib.suppress(KeyError):
            self.api.delete("pods", pod.namespace, pod.name)

    # -- API objects ---------------------------------------------------------------------
    def _container_env(self, container: Obj, pod: PodProcess) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var:
                env[name] = str(var["value"])
                continue
            source = var.get("valueFrom") or {}
            value = self._env_from(source, pod)
            if value is not None:
                env[name] = value
        return env

    def _env_from(self, source: Obj, pod: PodProcess) -> str | None:
        if ref := source.get("secretKeyRef"):
            secret = self.api.objects.get("secrets", {}).get((pod.namespace, ref["name"]))
            if secret is None:
                return None
            if ref["key"] in (secret.get("stringData") or {}):
                return str(secret["stringData"][ref["key"]])
            encoded = (secret.get("data") or {}).get(ref["key"])
            return None if encoded is None else base64.b64decode(encoded).decode()
        if ref := source.get("configMapKeyRef"):
            config = self.api.objects.get("configmaps", {}).get((pod.namespace, ref["name"]))
            return None if config is None else (config.get("data") or {}).get(ref["key"])
        if ref := source.get("fieldRef"):
            return {
                "metadata.name": pod.name,
                "metadata.namespace": pod.namespace,
                "status.podIP": pod.ip,
            }.get(ref.get("fieldPath", ""))
        return None

    def _write_pod(self, sandbox: Obj, template: Obj, pod: PodProcess, *, ready: bool) -> None:
        if pod.deleted:
            return
        metadata = sandbox["metadata"]
        template_meta = template.get("metadata") or {}
        labels = dict(template_meta.get("labels") or {})
        name_hash = uuid.uuid5(uuid.NAMESPACE_DNS, pod.name).hex[:8]
        labels["agents.x-k8s.io/sandbox-name-hash"] = name_hash
        status: Obj = {"phase": "Pending", "conditions": []}
        if ready:
            true = [
                {"type": kind, "status": "True"}
                for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ]
            status = {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": pod.ip,
                "podIPs": [{"ip": pod.ip}],
                "conditions": true,
            }
        existing = self.api.objects.get("pods", {}).get((pod.namespace, pod.name))
        uid = (existing or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
        self.api.put(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "uid": uid,
                    "labels": labels,
                    "annotations": dict(template_meta.get("annotations") or {}),
                    "ownerReferences": [
                        {
                            "apiVersion": f"{GROUP}/{VERSION}",
                            "kind": "Sandbox",
                            "name": metadata["name"],
                            "uid": metadata.get("uid", ""),
                            "controller": True,
                        }
                    ],
                },
                "spec": {**(template.get("spec") or {}), "nodeName": "fake-kubelet"},
                "status": status,
            },
        )

    def _mark_sandbox_ready(self, pod: PodProcess) -> None:
        """The Sandbox's status as agent-sandbox's controller writes it, on the current object
        (read and written on the loop, so a concurrent patch is not lost)."""
        current = self.api.objects.get(PLURAL, {}).get((pod.namespace, pod.name))
        if current is None:
            return
        updated = dict(current)
        updated["status"] = {
            **(current.get("status") or {}),
            "replicas": 1,
            "podIPs": [pod.ip],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "DependenciesReady", "message": ""}
            ],
        }
        self.api.put(PLURAL, updated)
