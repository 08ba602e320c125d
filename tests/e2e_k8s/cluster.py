"""A fake cluster in one helper process: the fake Kubernetes API served by kmock over HTTP on
127.0.0.1 with the CRDs of one agent-sandbox release and AgentCube's, the controllers of both
projects as fakes that behave like upstream's, and a fake node (kubelet.py) that runs a real
picod for each Pod.

`python -m e2e_k8s.cluster --root DIR [--preload FILE] [--images FILE]
[--agent-sandbox 0.4.6|0.5.6] [--agentcube-namespace NS] [--controller-delay SECONDS]
[--agentcube-retry SECONDS]`
(tests/ on PYTHONPATH). It installs the resources, puts the preloaded objects (a JSON list of
`{"plural": ..., "object": ...}`, in the storage version: v1beta1 agent-sandbox objects on
0.5.6), pulls images from the `--images` file (kubelet.Images: {name: root directory},
read at each pull, so a test adds images while the cluster runs), prints `listening
PORT` and serves until SIGTERM, when it stops the controllers, every picod and then the
API.

The controllers (each in its module): agent-sandbox's Sandbox, SandboxClaim and
SandboxWarmPool controllers and AgentCube's CodeInterpreter controller. Each waits the
controller delay before reconciling, so the orderings upstream has (a claim's Sandbox before
its Pod) are reproduced rather than hidden.

A separate process rather than a thread of the test runner: the SDK tests are synchronous and
block the runner's thread, while the API, its watches and the kubelet need a running loop;
and the picods are its children, stopped with it. In-process tests use `FakeCluster` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_k8s.agentcube_controller import RETRY_S, CodeInterpreterController
from e2e_k8s.claim_controller import ClaimController
from e2e_k8s.kubelet import Kubelet
from e2e_k8s.reconciling import Controller
from e2e_k8s.sandbox_controller import SandboxController
from e2e_k8s.versions import RELEASES, AgentSandbox
from e2e_k8s.warm_pool_controller import WarmPoolController
from support.crds import load_crds
from support.kubeapi import FakeApi, served

# Core resources the gateway, the controllers and the kubelet read or write.
CORE_PLURALS = ("secrets", "configmaps", "pods", "persistentvolumeclaims")


@dataclass(frozen=True)
class ClusterSettings:
    root: Path  # pod homes, volumes and picod logs
    agent_sandbox: str = "0.4.6"  # a key of versions.RELEASES
    agentcube_namespace: str = "agentcube"  # where picod-router-identity is read
    controller_delay_s: float = 0.05  # before each reconcile's writes
    agentcube_retry_s: float = RETRY_S  # CodeInterpreter retry while the identity is missing
    images: Path | None = None  # the node's pushed images (kubelet.Images)

    @property
    def release(self) -> AgentSandbox:
        return RELEASES[self.agent_sandbox]


def install(api: FakeApi, release: AgentSandbox) -> None:
    """The resources of a cluster with `release` of agent-sandbox and AgentCube installed."""
    for plural in CORE_PLURALS:
        api.install(plural, writable=True)
    for crd in load_crds(release.crds, "agentcube"):
        api.install_crd(crd)


class FakeCluster:
    """The controllers and the node, on one fake API (already installed)."""

    def __init__(self, api: FakeApi, settings: ClusterSettings) -> None:
        release, delay = settings.release, settings.controller_delay_s
        self.api = api
        self.kubelet = Kubelet(api, settings.root, settings.images)
        self.controllers: list[Controller] = [
            SandboxController(api, delay, release),
            ClaimController(api, delay, release),
            WarmPoolController(api, delay, release),
            CodeInterpreterController(
                api, delay, release, settings.agentcube_namespace, settings.agentcube_retry_s
            ),
        ]
        self._dispatching: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._dispatching = self.kubelet.start()
        for controller in self.controllers:
            controller.start()

    async def stop(self) -> None:
        """Controllers first (nothing makes new pods), then every picod."""
        for controller in self.controllers:
            await controller.stop()
        await self.kubelet.stop()
        if self._dispatching is not None:
            self._dispatching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatching


@contextlib.asynccontextmanager
async def running(
    settings: ClusterSettings, preload: Sequence[dict[str, Any]] = ()
) -> AsyncIterator[FakeApi]:
    """The API served on a free port with the controllers and the node running."""

    def setup(api: FakeApi) -> None:
        install(api, settings.release)
        for item in preload:
            api.put(item["plural"], item["object"])

    async with served(setup) as api:
        cluster = FakeCluster(api, settings)
        cluster.start()
        try:
            yield api
        finally:
            await cluster.stop()


async def serve(settings: ClusterSettings, preload: list[dict[str, Any]]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings, preload) as api:
        print(f"listening {api.port}", flush=True)
        await stop.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="e2e_k8s.cluster")
    parser.add_argument("--root", type=Path, required=True, help="pod homes and picod logs")
    parser.add_argument("--preload", type=Path, help="JSON list of {plural, object}")
    parser.add_argument(
        "--images", type=Path, metavar="FILE",
        help="JSON {image name: root directory}, read at each pull (may not exist yet)",
    )  # fmt: skip
    parser.add_argument(
        "--agent-sandbox", choices=sorted(RELEASES), default="0.4.6",
        help="the agent-sandbox release: its CRDs and storage version (default 0.4.6)",
    )  # fmt: skip
    parser.add_argument(
        "--agentcube-namespace", default="agentcube",
        help="AgentCube's namespace, where its identity Secret is read (default agentcube)",
    )  # fmt: skip
    parser.add_argument(
        "--controller-delay", type=float, default=0.05, metavar="SECONDS",
        help="wait before each reconcile's writes (default 0.05)",
    )  # fmt: skip
    parser.add_argument(
        "--agentcube-retry", type=float, default=RETRY_S, metavar="SECONDS",
        help=f"CodeInterpreter retry while the identity Secret is missing (default {RETRY_S:g})",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    for noisy in ("aiohttp.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    preload = json.loads(args.preload.read_text()) if args.preload else []
    settings = ClusterSettings(
        root=args.root,
        agent_sandbox=args.agent_sandbox,
        agentcube_namespace=args.agentcube_namespace,
        controller_delay_s=args.controller_delay,
        agentcube_retry_s=args.agentcube_retry,
        images=args.images,
    )
    return asyncio.run(serve(settings, preload))


if __name__ == "__main__":
    sys.exit(main())
