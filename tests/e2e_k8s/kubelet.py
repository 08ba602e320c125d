"""A fake node: for each Pod in the fake Kubernetes API it runs the container's picod as a real
process, and writes the Pod's status as a kubelet would. Pods come from the fake controllers
(sandbox_controller.py); the lifecycle service and the edge see only the API objects.

Each pod gets a loopback address of its own (127.101.x.y, never reused), so every "pod" can
listen on envd's 49983. Its status goes through the kubelet's stages:
- Pending, the container waiting: its env cannot be resolved (a Secret or ConfigMap, or a key
  of one, is missing: reason `CreateContainerConfigError`, message as the kubelet's), or a
  persistentVolumeClaim it mounts does not exist yet (`ContainerCreating`). Retried whenever a
  Secret, ConfigMap or PVC of its namespace changes.
- Running, not Ready: picod started, `podIP` set.
- Running and Ready once picod answers GET /health (the readiness probe).
- Failed if picod exits on its own (no restarts).
When the Pod is deleted (by a controller, or by the garbage collector with its Sandbox) picod
is stopped.

The container's env is resolved as a kubelet does: `envFrom` (secretRef, configMapRef), then
`env` entries: `value`, `valueFrom.secretKeyRef`, `configMapKeyRef` (both honouring
`optional`) and the `fieldRef`s a pod can read. picod gets that env plus PATH, HOME and
PYTHONPATH, and its flags from the container (picod_argv) with --listen and --home set here.

Filesystems: a volume backed by a persistentVolumeClaim (a Sandbox's volumeClaimTemplates)
is a directory per PVC object that outlives pods; any other volume, and the rest of the
container's filesystem, belong to the pod and are not seen again by the next one. picod's home
is the first PVC-backed volume (assumption: the workspace is the volume that matters, wherever
it is mounted), else a fresh directory per pod. picod's state directory (`--state-dir`,
AGENTCUBE_E2B_PICOD_STATE_DIR) is a container path: under one of the container's
volumeMounts it lands in that volume, elsewhere in the pod's own layer; so a binding kept there
survives a scale-down only on a persistent volume, as in a cluster. Everything lives under
--root: <root>/<namespace>/<pod>-<uid>/ (picod.log, home, volumes, rootfs) and
<root>/volumes/<namespace>/<pvc>-<uid>/.

Images. By default every container is "the sandbox image": picod from this venv, as above.
An image registered in `images` (image name -> a root filesystem directory) is run as a
container instead: in a copy of that root of the pod's own, under bubblewrap
(support/python_less.py), with the container's own command and args, its volumeMounts bound
in, and only its env; picod's port is the pod's address through AGENTCUBE_E2B_PICOD_LISTEN
(what the pod's own network namespace would give it). Such a pod's initContainers run
first, in order, each in its own image's root with its volumeMounts; one that exits non-zero
fails the pod (`Init:Error`), and an image not registered leaves it waiting
(`ErrImagePull`). Images come in two ways (`Images`): put in `images` by a test in this
process, or pushed by another one to a JSON file the node reads at each pull (cluster.py's
--images), as a registry the node pulls from. An `emptyDir` is a directory of the pod's
own, as any non-PVC volume.

Writes go through the fake's in-process `put` on the loop, so the watch events the gateway
receives are the ones these writes produce.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from e2e_k8s.objects import Obj, Store, get, key_of, now, rfc3339, write
from support.python_less import in_root

log = logging.getLogger("fake-kubelet")

PODS = "pods"
# A change of one of these may unblock a pod waiting for its configuration.
_CONFIG_PLURALS = ("secrets", "configmaps", "persistentvolumeclaims")
PICOD_PORT = 49983
PICOD = [sys.executable, "-m", "extproc.cli", "picod"]
# The one node; pods are bound to it when created (sandbox_controller.py: no scheduler here).
NODE_NAME = "fake-node"
HOST_IP = "127.0.0.1"
# Flags the kubelet sets itself: the pod's own address, and a home that exists on this host.
_OWN_FLAGS = ("--listen", "--home")
# picod's path settings that would otherwise point into this host: mapped (see host_path).
STATE_DIR_FLAG, STATE_DIR_ENV = "--state-dir", "AGENTCUBE_E2B_PICOD_STATE_DIR"
_READY_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0


class Images(dict[str, Path]):
    """The images this node has: image name -> root filesystem. Besides those put in, the
    ones in the JSON file `pushed` ({name: root}), read at each look-up: images a process
    other than the node's pushes while it runs."""

    def __init__(self, pushed: Path | None = None) -> None:
        super().__init__()
        self.pushed = pushed

    def _pushed(self) -> dict[str, Path]:
        if self.pushed is None or not self.pushed.exists():
            return {}
        return {str(name): Path(root) for name, root in json.loads(self.pushed.read_text()).items()}

    def __missing__(self, name: str) -> Path:
        return self._pushed()[name]

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or name in self._pushed()


def push_image(pushed: Path, name: str, root: Path) -> None:
    """Add image `name` (a root filesystem) to the node's file of pushed images (`Images`);
    written whole and renamed, so the node never reads half a file."""
    images = json.loads(pushed.read_text()) if pushed.exists() else {}
    images[name] = str(root)
    partial = pushed.with_name(pushed.name + ".partial")
    partial.write_text(json.dumps(images))
    partial.rename(pushed)


class ContainerConfigError(Exception):
    """The container cannot be created yet; `reason` is its waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def loopback_addresses() -> Iterator[str]:
    """127.101.0.1, 127.101.0.2, ...: never reused within one kubelet, and skipping any whose
    picod port something else holds (another fake cluster on this machine, or a picod left
    over by a killed run), as a real node never hands out an IP in use."""
    for third in range(256):
        for fourth in range(1, 255):
            address = f"127.101.{third}.{fourth}"
            if _port_free(address, PICOD_PORT):
                yield address


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


@dataclass
class PodProcess:
    namespace: str
    name: str
    uid: str
    ip: str
    directory: Path
    process: asyncio.subprocess.Process | None = None
    # the task starting it; deleting the Pod sets `deleted` and waits for this task
    starting: asyncio.Task[None] | None = None
    deleted: bool = False
    waiting: bool = False  # blocked on its configuration; retried on config changes
    started_at: str = ""


def picod_refuses(ip: str) -> bool:
    """Whether a connection to picod's port at `ip` is refused (the pod's picod is gone)."""
    try:
        socket.create_connection((ip, PICOD_PORT), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def picod_argv(
    container: Obj, ip: str, home: Path, host_path: Callable[[str], str] = str
) -> list[str]:
    """The container's picod flags (after a `picod` word in command+args, else its args),
    with --listen and --home set to this pod's address and a host directory, and the
    --state-dir of the container mapped to the host by `host_path`."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    if "picod" in words:
        words = words[words.index("picod") + 1 :]
    elif container.get("command"):
        words = [str(w) for w in container.get("args") or []]
    flags: list[str] = []
    skip = mapping = False
    for word in words:
        if skip or mapping:
            flags += [host_path(word)] if mapping else []
            skip = mapping = False
            continue
        name, eq, value = word.partition("=")
        if name in _OWN_FLAGS:
            skip = not eq
            continue
        if name == STATE_DIR_FLAG:
            mapping = not eq
            flags.append(f"{name}={host_path(value)}" if eq else name)
            continue
        flags.append(word)
    return [*PICOD, *flags, "--listen", f"{ip}:{PICOD_PORT}", "--home", str(home)]


def _decoded(secret: Obj, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    encoded = (secret.get("data") or {}).get(key)
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("kubelet task failed", exc_info=error)


class Kubelet:
    def __init__(self, api: Store, root: Path, pushed_images: Path | None = None) -> None:
        self.api = api
        self.root = root
        # image -> root filesystem, for containers run as such (see the module docstring)
        self.images = Images(pushed_images)
        self.pods: dict[tuple[str, str], PodProcess] = {}
        self._addresses = loopback_addresses()
        self._events: asyncio.Queue[tuple[str, str, Obj]] = asyncio.Queue()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- watching ------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Follow Pods from now on (and those already there); returns the dispatching task,
        which the caller cancels after `stop`."""
        for obj in list(self.api.objects.get(PODS, {}).values()):
            self._events.put_nowait((PODS, "ADDED", copy.deepcopy(obj)))
        self.api.listeners.append(self._on_change)
        return asyncio.create_task(self._dispatch(), name="kubelet-dispatch")

    def _on_change(self, plural: str, kind: str, obj: Obj) -> None:
        # Called by the fake inside each write, on the loop: only queue, never write back.
        if (plural == PODS or plural in _CONFIG_PLURALS) and not self._stopping:
            self._events.put_nowait((plural, kind, obj))

    async def _dispatch(self) -> None:
        while True:
            plural, kind, obj = await self._events.get()
            if plural == PODS:
                self._pod_changed(kind, obj)
                continue
            namespace = key_of(obj)[0]
            for pod in self.pods.values():
                if pod.waiting and not pod.deleted and pod.namespace == namespace:
                    pod.waiting = False
                    pod.starting = self._spawn(self._run_pod(pod))

    def _pod_changed(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        uid = str(obj["metadata"].get("uid") or "")
        known = self.pods.get(key)
        if known is not None and (kind == "DELETED" or known.uid != uid):
            self._spawn(self._stop_pod(self.pods.pop(key)))
            known = None
        if kind != "DELETED" and known is None:
            directory = self.root / key[0] / f"{key[1]}-{uid[:8]}"
            pod = PodProcess(key[0], key[1], uid, next(self._addresses), directory)
            self.pods[key] = pod
            pod.starting = self._spawn(self._run_pod(pod))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
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
    def _current(self, pod: PodProcess) -> Obj | None:
        obj = get(self.api, PODS, pod.namespace, pod.name)
        if obj is None or obj["metadata"].get("uid", "") != pod.uid:
            return None
        return obj

    async def _run_pod(self, pod: PodProcess) -> None:
        obj = self._current(pod)
        if obj is None or pod.deleted:
            return
        containers = (obj.get("spec") or {}).get("containers") or [{}]
        container = containers[0]
        try:
            volumes = self._volumes(obj, pod)
            env = self._container_env(container, obj, pod)
        except ContainerConfigError as error:
            pod.waiting = True
            log.info("pod %s/%s: %s: %s", pod.namespace, pod.name, error.reason, error.message)
            self._write_status(pod, self._status(pod, obj, "waiting", error.reason, error.message))
            return
        pod.directory.mkdir(parents=True, exist_ok=True)
        if str(container.get("image")) in self.images:
            try:
                await self._run_init_containers(obj, pod, volumes)
            except ContainerConfigError as error:
                stage = "terminated" if error.reason == "Init:Error" else "waiting"
                log.info("pod %s/%s: %s: %s", pod.namespace, pod.name, error.reason, error.message)
                self._write_status(pod, self._status(pod, obj, stage, error.reason, error.message))
                return
            argv, process_env, cwd = self._in_image(container, env, volumes, pod)
        else:
            argv, process_env, cwd = self._picod_here(container, env, volumes, pod)
        with (pod.directory / "picod.log").open("ab") as sink:
            pod.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                env=process_env,
                cwd=cwd,
                start_new_session=True,
            )
        pod.started_at = rfc3339(now())
        self._write_status(pod, self._status(pod, obj, "running"))
        if not await self._wait_serving(pod):
            if not pod.deleted:
                log.warning("picod of %s/%s did not become ready", pod.namespace, pod.name)
                self._write_status(pod, self._status(pod, obj, "terminated", "Error"))
            return
        self._write_status(pod, self._status(pod, obj, "ready"))
        self._spawn(self._watch_exit(pod, obj))

    def _picod_here(
        self, container: Obj, env: dict[str, str], volumes: dict[str, tuple[Path, bool]],
        pod: PodProcess,
    ) -> tuple[list[str], dict[str, str], str]:  # fmt: skip
        """The sandbox image: this venv's picod, its paths mapped onto this host."""
        claimed = [path for path, persistent in volumes.values() if persistent]
        home = claimed[0] if claimed else pod.directory / "home"
        host_path = self._host_paths(container, volumes, pod)
        if STATE_DIR_ENV in env:
            env[STATE_DIR_ENV] = host_path(env[STATE_DIR_ENV])
        home.mkdir(parents=True, exist_ok=True)
        process_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        process_env.update(env)
        if "PYTHONPATH" in os.environ:
            process_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return picod_argv(container, pod.ip, home, host_path), process_env, str(home)

    def _rooted(
        self, container: Obj, env: dict[str, str], volumes: dict[str, tuple[Path, bool]],
        pod: PodProcess,
    ) -> list[str]:  # fmt: skip
        """`container` run in its image's root (a copy per pod and container), its
        volumeMounts bound in; the argv of bubblewrap."""
        image = self.images[str(container.get("image"))]
        root = pod.directory / "containers" / str(container.get("name"))
        if not root.exists():
            # Hard links: a fast copy; a container that rewrote an image file in place would
            # change the image (none of the tests' do: they write new files).
            shutil.copytree(image, root, symlinks=True, copy_function=os.link)
        binds: dict[str, Path] = {}
        read_only = []
        for mount in container.get("volumeMounts") or []:
            host = volumes[mount["name"]][0]
            host.mkdir(parents=True, exist_ok=True)
            binds[str(mount["mountPath"])] = host
            if mount.get("readOnly"):
                read_only.append(str(mount["mountPath"]))
        words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
        return in_root(root, binds, words, {"PATH": "/bin:/usr/bin", **env}, read_only)

    def _in_image(
        self, container: Obj, env: dict[str, str], volumes: dict[str, tuple[Path, bool]],
        pod: PodProcess,
    ) -> tuple[list[str], dict[str, str], str]:  # fmt: skip
        listen = {"AGENTCUBE_E2B_PICOD_LISTEN": f"{pod.ip}:{PICOD_PORT}"}
        return self._rooted(container, {**env, **listen}, volumes, pod), {}, str(pod.directory)

    async def _run_init_containers(
        self, obj: Obj, pod: PodProcess, volumes: dict[str, tuple[Path, bool]]
    ) -> None:
        """Each init container to its end, in order; ContainerConfigError if one cannot
        start (ErrImagePull) or fails (Init:Error)."""
        for container in (obj.get("spec") or {}).get("initContainers") or []:
            image = str(container.get("image"))
            if image not in self.images:
                raise ContainerConfigError("ErrImagePull", f"image {image!r} is not on this node")
            env = self._container_env(container, obj, pod)
            with (pod.directory / "init.log").open("ab") as sink:
                process = await asyncio.create_subprocess_exec(
                    *self._rooted(container, env, volumes, pod), stdin=asyncio.subprocess.DEVNULL,
                    stdout=sink, stderr=asyncio.subprocess.STDOUT, env={},
                    start_new_session=True,
                )  # fmt: skip
                code = await process.wait()
            if code != 0:
                message = f"init container {container.get('name')} exited with {code}"
                raise ContainerConfigError("Init:Error", message)

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

    async def _watch_exit(self, pod: PodProcess, obj: Obj) -> None:
        assert pod.process is not None
        code = await pod.process.wait()
        if not pod.deleted:
            log.warning("picod of %s/%s exited with %s", pod.namespace, pod.name, code)
            self._write_status(pod, self._status(pod, obj, "terminated", "Error", code=code))

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

    # -- the container's configuration ---------------------------------------------------
    def _volumes(self, obj: Obj, pod: PodProcess) -> dict[str, tuple[Path, bool]]:
        """Volume name -> (host directory, persistent). A persistentVolumeClaim's directory
        belongs to the PVC object and outlives pods; any other volume is the pod's own."""
        volumes: dict[str, tuple[Path, bool]] = {}
        for volume in (obj.get("spec") or {}).get("volumes") or []:
            name = str(volume.get("name", ""))
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                volumes[name] = (pod.directory / "volumes" / name, False)
                continue
            pvc = get(self.api, "persistentvolumeclaims", pod.namespace, claim)
            if pvc is None:
                message = f'persistentvolumeclaim "{claim}" not found'
                raise ContainerConfigError("ContainerCreating", message)
            uid = str(pvc["metadata"].get("uid") or "")
            volumes[name] = (self.root / "volumes" / pod.namespace / f"{claim}-{uid[:8]}", True)
        return volumes

    def _host_paths(
        self, container: Obj, volumes: dict[str, tuple[Path, bool]], pod: PodProcess
    ) -> Callable[[str], str]:
        """Container path -> host path: under a volumeMount, in that volume's directory;
        elsewhere in the pod's own writable layer, which a new pod does not get back."""

        def absolute(path: str) -> str:
            return os.path.normpath("/" + path.lstrip("/"))  # normpath keeps a leading "//"

        mounts = [
            (absolute(str(mount.get("mountPath", "/"))), volumes[mount["name"]][0])
            for mount in container.get("volumeMounts") or []
            if mount.get("name") in volumes
        ]
        mounts.sort(key=lambda mount: len(mount[0]), reverse=True)

        def host_path(path: str) -> str:
            inside = absolute(path)
            for mount_path, directory in mounts:
                if inside == mount_path or inside.startswith(mount_path.rstrip("/") + "/"):
                    return str(directory / inside[len(mount_path) :].lstrip("/"))
            return str(pod.directory / "rootfs" / inside.lstrip("/"))

        return host_path

    def _container_env(self, container: Obj, obj: Obj, pod: PodProcess) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            for plural, ref_field, kind in (
                ("secrets", "secretRef", "secret"),
                ("configmaps", "configMapRef", "configmap"),
            ):
                if not (ref := source.get(ref_field)):
                    continue
                found = get(self.api, plural, pod.namespace, ref["name"])
                if found is None:
                    if ref.get("optional"):
                        continue
                    message = f'{kind} "{ref["name"]}" not found'
                    raise ContainerConfigError("CreateContainerConfigError", message)
                keys = set(found.get("data") or {}) | set(found.get("stringData") or {})
                for name in sorted(keys):
                    value = self._value(plural, found, name)
                    if value is not None:
                        env[prefix + name] = value
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var:
                env[name] = str(var["value"])
            elif (value := self._env_from(var.get("valueFrom") or {}, obj, pod)) is not None:
                env[name] = value
        return env

    def _value(self, plural: str, found: Obj, key: str) -> str | None:
        if plural == "secrets":
            return _decoded(found, key)
        value = (found.get("data") or {}).get(key)
        return None if value is None else str(value)

    def _env_from(self, source: Obj, obj: Obj, pod: PodProcess) -> str | None:
        for plural, ref_field, kind in (
            ("secrets", "secretKeyRef", "Secret"),
            ("configmaps", "configMapKeyRef", "ConfigMap"),
        ):
            if not (ref := source.get(ref_field)):
                continue
            found = get(self.api, plural, pod.namespace, ref["name"])
            value = None if found is None else self._value(plural, found, ref["key"])
            if value is not None or ref.get("optional"):
                return value
            if found is None:
                message = f'{kind.lower()} "{ref["name"]}" not found'
            else:
                message = f"couldn't find key {ref['key']} in {kind} {pod.namespace}/{ref['name']}"
            raise ContainerConfigError("CreateContainerConfigError", message)
        if ref := source.get("fieldRef"):
            return self._field(str(ref.get("fieldPath", "")), obj, pod)
        return None

    def _field(self, path: str, obj: Obj, pod: PodProcess) -> str | None:
        metadata = obj.get("metadata") or {}
        for field in ("labels", "annotations"):
            prefix = f"metadata.{field}['"
            if path.startswith(prefix) and path.endswith("']"):
                return (metadata.get(field) or {}).get(path[len(prefix) : -2])
        return {
            "metadata.name": pod.name,
            "metadata.namespace": pod.namespace,
            "metadata.uid": pod.uid,
            "spec.nodeName": (obj.get("spec") or {}).get("nodeName", NODE_NAME),
            "spec.serviceAccountName": (obj.get("spec") or {}).get("serviceAccountName", "default"),
            "status.podIP": pod.ip,
            "status.hostIP": HOST_IP,
        }.get(path)

    # -- status --------------------------------------------------------------------------
    def _status(
        self,
        pod: PodProcess,
        obj: Obj,
        stage: str,
        reason: str = "",
        message: str = "",
        code: int | None = None,
    ) -> Obj:
        """The Pod status at `stage`: waiting, running (not ready), ready or terminated."""
        container = ((obj.get("spec") or {}).get("containers") or [{}])[0]
        ready = stage == "ready"
        state: Obj
        if stage == "waiting":
            state = {"waiting": {"reason": reason, "message": message}}
        elif stage == "terminated":
            exit_code = 1 if code is None else code
            state = {"terminated": {"exitCode": exit_code, "reason": reason}}
        else:
            state = {"running": {"startedAt": pod.started_at}}
        kinds = {"PodScheduled": True, "Initialized": True}
        kinds |= {"ContainersReady": ready, "Ready": ready}
        phase = {"waiting": "Pending", "terminated": "Failed"}.get(stage, "Running")
        status: Obj = {
            "phase": phase,
            "hostIP": HOST_IP,
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "conditions": [
                {"type": kind, "status": "True" if value else "False"}
                for kind, value in kinds.items()
            ],
            "containerStatuses": [
                {
                    "name": container.get("name", ""),
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "started": stage in ("running", "ready"),
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        if pod.started_at:
            status["startTime"] = pod.started_at
        return status

    def _write_status(self, pod: PodProcess, status: Obj) -> None:
        if pod.deleted:
            return
        current = self._current(pod)
        if current is None:
            return
        current["status"] = status
        write(self.api, PODS, current)
