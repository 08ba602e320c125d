"""What a sandbox of a built template does before it is handed out.

A template's build can set the sandbox's default user and working directory (USER,
WORKDIR), a start command and a ready command. Once picod answers, the lifecycle service
applies them through picod itself, as a client would: `POST /init` for the defaults, and
envd's `process.Process/Start` for the commands. Both backends do (`apply`); only how a call
reaches picod differs (`PicodPost`): locally straight to its address with the user in Basic
auth (`prepare`), in Kubernetes mode with the router's JWT and the user in picod's user
header (picod_client.py). The start command is started in the
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
from typing import Any, Protocol

from extproc.core.errors import Unavailable
from extproc.lifecycle.probing import PICOD_PORT, Probe
from extproc.lifecycle.templates import Template

READY_TIMEOUT_S = 60.0
CALL_S = 30.0  # one call to picod: the ready command's run included
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


class PicodPost(Protocol):
    """One POST to a sandbox's picod with its access token, as `user` when given: (status,
    raw body). Raises OSError, TimeoutError or Unavailable when picod cannot be reached."""

    async def __call__(
        self, path: str, headers: dict[str, str], body: bytes, user: str
    ) -> tuple[int, bytes]: ...


def direct(probe: Probe, host: str, token: str) -> PicodPost:
    """Calls to the picod at `host`, reached through `probe` (local mode)."""

    async def post(path: str, headers: dict[str, str], body: bytes, user: str) -> tuple[int, bytes]:
        sent = {**headers, "X-Access-Token": token}
        if user:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{user}:".encode()).decode()
        return await probe.request(host, PICOD_PORT, "POST", path, sent, body, CALL_S)

    return post


async def _run(post: PicodPost, user: str, cwd: str, args: list[str]) -> tuple[int | None, str]:
    process: dict[str, Any] = {"cmd": "/bin/sh", "args": args}
    if cwd:
        process["cwd"] = cwd
    headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    status, body = await post("/process.Process/Start", headers, _envelope({"process": process}),
                              user)  # fmt: skip
    if status != 200:
        raise Unavailable(f"picod refused to start a template command (HTTP {status})")
    return _outcome(body)


def has_start_settings(template: Template) -> bool:
    """Whether a sandbox of `template` has anything to apply before it is handed out."""
    return bool(template.user or template.workdir or template.start_cmd or template.ready_cmd)


async def prepare(probe: Probe, host: str, token: str, template: Template) -> None:
    """Apply `template`'s defaults and commands to the sandbox at `host` (local mode)."""
    await apply(direct(probe, host, token), template)


async def apply(
    post: PicodPost, template: Template, ready_within_s: float = READY_TIMEOUT_S
) -> None:
    """Apply `template`'s defaults and commands through `post` (see above); Unavailable when
    the ready command has not succeeded within `ready_within_s`."""
    user = template.user or "user"
    if template.user or template.workdir:
        init: dict[str, str] = {}
        if template.user:
            init["defaultUser"] = template.user
        if template.workdir:
            init["defaultWorkdir"] = template.workdir
        headers = {"Content-Type": "application/json"}
        status, _ = await post("/init", headers, json.dumps(init).encode(), "")
        if status // 100 != 2:
            raise Unavailable(f"picod refused the template's user and workdir (HTTP {status})")
    if template.start_cmd:
        await _run(post, user, template.workdir, ["-c", _START, "sh", template.start_cmd])
    if not template.ready_cmd:
        return
    deadline = time.monotonic() + ready_within_s
    delay = 0.2
    while True:
        code, output = await _run(post, user, template.workdir, ["-c", template.ready_cmd])
        if code == 0:
            return
        if time.monotonic() + delay > deadline:
            raise Unavailable(
                f"template {template.template_id}: its ready command did not succeed within "
                f"{ready_within_s:g} s (last exit code {code}; output: {output[-300:]!r})"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)
