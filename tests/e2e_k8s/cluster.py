"""A fake cluster in one helper process: the fake Kubernetes API served by kmock over HTTP on
127.0.0.1, and the fake kubelet (kubelet.py) that runs a real picod for each Sandbox.

`python -m e2e_k8s.cluster --root DIR [--preload FILE]` (tests/ on PYTHONPATH). It installs
the resources the gateway uses, puts the preloaded objects (a JSON list of
`{"plural": ..., "object": ...}`), prints `listening PORT` and serves until SIGTERM, when it
stops every picod and then the API.

A separate process rather than a thread of the test runner: the SDK tests are synchronous and
block the runner's thread, while the API, its watches and the kubelet need a running loop;
and the picods are its children, stopped with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from e2e_k8s.kubelet import Kubelet
from support.kubeapi import FakeApi, served

# plural -> (group, version) of everything the gateway reads or writes.
RESOURCES = {
    "secrets": ("", "v1"),
    "configmaps": ("", "v1"),
    "pods": ("", "v1"),
    "codeinterpreters": ("runtime.agentcube.volcano.sh", "v1alpha1"),
    "sandboxes": ("agents.x-k8s.io", "v1alpha1"),
    "sandboxclaims": ("extensions.agents.x-k8s.io", "v1alpha1"),
}


async def serve(root: Path, preload: list[dict[str, Any]]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def setup(api: FakeApi) -> None:
        for plural, (group, version) in RESOURCES.items():
            api.install(plural, group=group, version=version, writable=True)
        for item in preload:
            api.put(item["plural"], item["object"])

    async with served(setup) as api:
        kubelet = Kubelet(api, root)
        dispatching = kubelet.start()
        print(f"listening {api.port}", flush=True)
        try:
            await stop.wait()
        finally:
            await kubelet.stop()
            dispatching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatching
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="e2e_k8s.cluster")
    parser.add_argument("--root", type=Path, required=True, help="pod homes and picod logs")
    parser.add_argument("--preload", type=Path, help="JSON list of {plural, object}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    for noisy in ("aiohttp.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    preload = json.loads(args.preload.read_text()) if args.preload else []
    return asyncio.run(serve(args.root, preload))


if __name__ == "__main__":
    sys.exit(main())
