"""What a sandbox of a built template does before it is handed out.

A template's build can set the sandbox's default user and working directory (USER,
WORKDIR), a start command and a ready command. Once picod answers, the lifecycle service
applies them through picod itself, as a client would: `POST /init` for the defaults, and
envd's `process.Process/Start` for the commands. The start command is started in the
background as the template's user, in its working directory, with the sandbox's env vars
(its output goes to /tmp/agentcube-start.log inside); then the ready command runs every
0.2-1 s until it exits 0, and only then is the sandbox handed out, or put in the warm pool,
which so holds ready sandboxes only. A ready command that never succeeds fails the start.

E2B runs both once, at the end of the build, and keeps the running result in a memory
snapshot; here they run at every sandbox start (there is no memory snapshot), so a sandbox
from such a template is ready later than one from `base` by what its commands take.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from typing import Any

from extproc.core.errors import Unavailable
from extproc.lifecycle.probing import PICOD_PORT, Probe
from extproc.lifecycle.templates import Template

READY_TIMEOUT_S = 60.0
_CALL_S = 30.0
_START = 'nohup /bin/sh -c "$1" </dev/null >>/tmp/agentcube-start.log 2>&1 &'


def _envelope(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc).encode()
    return struct.pack(">BI", 0, len(body)) + body


def _outcome(raw: bytes) -> tuple[int | None, str]:
    """The exit code and output of a Connect Process/Start stream (None: no end event)."""
    code: int | None = None
    output = ""
    offset = 0
    while offset + 5 <= len(raw):
        flags, size = struct.unpack(">BI", raw[offset : offset + 5])
        body = raw[offset + 5 : offset + 5 + size]
        offset += 5 + size
        if flags & 0x02:
            continue  # the end-of-stream message
        event = json.loads(body).get("event", {})
        data = event.get("data", {})
        for stream in ("stdout", "stderr"):
            if stream in data:
                output += base64.b64decode(data[stream]).decode(errors="replace")
        if "end" in event:
            code = int(event["end"].get("exitCode", 0))
    return code, output


async def _run(
    probe: Probe, host: str, token: str, user: str, cwd: str, args: list[str]
) -> tuple[int | None, str]:
    process: dict[str, Any] = {"cmd": "/bin/sh", "args": args}
    if cwd:
        process["cwd"] = cwd
    headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "X-Access-Token": token,
        "Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode(),
    }
    status, body = await probe.request(
        host, PICOD_PORT, "POST", "/process.Process/Start", headers,
        _envelope({"process": process}), _CALL_S,
    )  # fmt: skip
    if status != 200:
        raise Unavailable(f"picod refused to start a template command (HTTP {status})")
    return _outcome(body)


async def prepare(probe: Probe, host: str, token: str, template: Template) -> None:
    """Apply `template`'s defaults and commands to the sandbox at `host` (see above)."""
    user = template.user or "user"
    if template.user or template.workdir:
        init: dict[str, str] = {}
        if template.user:
            init["defaultUser"] = template.user
        if template.workdir:
            init["defaultWorkdir"] = template.workdir
        headers = {"X-Access-Token": token, "Content-Type": "application/json"}
        status, _ = await probe.request(
            host, PICOD_PORT, "POST", "/init", headers, json.dumps(init).encode(), _CALL_S
        )
        if status // 100 != 2:
            raise Unavailable(f"picod refused the template's user and workdir (HTTP {status})")
    if template.start_cmd:
        await _run(probe, host, token, user, template.workdir, ["-c", _START, "sh",
                                                                template.start_cmd])  # fmt: skip
    if not template.ready_cmd:
        return
    deadline = time.monotonic() + READY_TIMEOUT_S
    delay = 0.2
    while True:
        code, output = await _run(
            probe, host, token, user, template.workdir, ["-c", template.ready_cmd]
        )
        if code == 0:
            return
        if time.monotonic() + delay > deadline:
            raise Unavailable(
                f"template {template.template_id}: its ready command did not succeed within "
                f"{READY_TIMEOUT_S:g} s (last exit code {code}; output: {output[-300:]!r})"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)
