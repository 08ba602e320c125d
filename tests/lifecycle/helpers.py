"""Shared helpers for lifecycle tests: a gRPC client and running commands in a sandbox."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import httpx

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb

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


async def run_command(sandbox: pb.Sandbox, script: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run `/bin/sh -c script` through picod's Connect Process/Start; (exit code, stdout)."""
    url = f"http://{sandbox.endpoint_host}:{PICOD_PORT}/process.Process/Start"
    headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "X-Access-Token": sandbox.envd_access_token,
    }
    body = _envelope({"process": {"cmd": "/bin/sh", "args": ["-c", script]}})
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(url, content=body, headers=headers)
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


async def health(host: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(f"http://{host}:{PICOD_PORT}/health")).status_code
    except httpx.HTTPError:
        return 0


def running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2] != "Z"
