"""Shared helpers for lifecycle tests: a gRPC client and running commands in a sandbox."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.lifecycle.networking import NETNS_DIR, enter_netns

PICOD_PORT = 49983


def _envelope(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc).encode()
    return struct.pack(">BI", 0, len(body)) + body


def _messages(raw: bytes) -> list[dict[str, Any]]:
    out, i = [], 0
    while i + 5 <= len(raw):
        flags, size = struct.unpack(">BI", raw[i : i + 5])
        body = raw[i + 5 : i + 5 + size]
        i += 5 + size
        if not flags & 0x02:
            out.append(json.loads(body))
    return out


T = TypeVar("T")
_HUB_THREADS: dict[Path, ThreadPoolExecutor] = {}


async def in_hub(sandbox_id: str, call: Callable[[], T]) -> T:
    """Run `call` in a thread inside the hub namespace that reaches `sandbox_id`: a sandbox's
    servers are reachable from there only. ConnectionError once the sandbox is gone."""
    found = sorted(NETNS_DIR.glob(f"*-{sandbox_id}"))
    if not found:
        raise ConnectionError(f"sandbox {sandbox_id} has no network namespace")
    hub = NETNS_DIR / (found[0].name.removesuffix(f"-{sandbox_id}") + "-hub")
    if hub not in _HUB_THREADS:
        _HUB_THREADS[hub] = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(hub,))
    return await asyncio.get_running_loop().run_in_executor(_HUB_THREADS[hub], call)


async def run_command(sandbox: pb.Sandbox, script: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run `/bin/sh -c script` through picod's Connect Process/Start; (exit code, stdout)."""
    url = f"http://{sandbox.endpoint_host}:{PICOD_PORT}/process.Process/Start"
    headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "X-Access-Token": sandbox.envd_access_token,
    }
    body = _envelope({"process": {"cmd": "/bin/sh", "args": ["-c", script]}})

    def post() -> httpx.Response:
        with httpx.Client(timeout=timeout) as client:
            return client.post(url, content=body, headers=headers)

    response = await in_hub(sandbox.sandbox_id, post)
    assert response.status_code == 200, response.text
    stdout, code = "", None
    for message in _messages(response.content):
        event = message.get("event", {})
        if "data" in event and "stdout" in event["data"]:
            stdout += base64.b64decode(event["data"]["stdout"]).decode()
        if "end" in event:
            code = int(event["end"].get("exitCode", 0))
    assert code is not None, f"no end event in {response.content[:300]!r}"
    return code, stdout


async def health(sandbox: pb.Sandbox) -> int:
    """picod's /health status, or 0 when it does not answer (or the sandbox is gone)."""

    def get() -> int:
        with httpx.Client(timeout=2.0) as client:
            url = f"http://{sandbox.endpoint_host}:{PICOD_PORT}/health"
            return client.get(url).status_code

    try:
        return await in_hub(sandbox.sandbox_id, get)
    except (httpx.HTTPError, ConnectionError):
        return 0


def running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2] != "Z"
