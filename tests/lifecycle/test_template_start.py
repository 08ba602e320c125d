"""template_start: what both backends send picod to apply a built template's user, workdir,
start and ready commands (a fake picod answering envd's Connect stream), and how the user is
named on each transport (local: Basic auth; Kubernetes: the user header under the JWT)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from extproc.core.errors import Unavailable
from extproc.lifecycle import template_start
from extproc.lifecycle.templates import Build, Template


def _built(**settings: str) -> Template:
    build = Build("b1", status="ready", **settings)  # type: ignore[arg-type]
    return Template("tpl", builds=(build,), build_id="b1")


def _stream(exit_code: int, stdout: str = "") -> bytes:
    events = [{"event": {"data": {"stdout": base64.b64encode(stdout.encode()).decode()}}},
              {"event": {"end": {"exitCode": exit_code}}}]  # fmt: skip
    raw = b"".join(struct.pack(">BI", 0, len(json.dumps(e))) + json.dumps(e).encode()
                   for e in events)  # fmt: skip
    return raw + struct.pack(">BI", 2, 2) + b"{}"


class FakePicod:
    """Answers /init with 204 and each command with the next of `exits`."""

    def __init__(self, *exits: int) -> None:
        self.exits = list(exits)
        self.calls: list[tuple[str, dict[str, str], dict[str, Any], str]] = []

    async def __call__(
        self, path: str, headers: dict[str, str], body: bytes, user: str
    ) -> tuple[int, bytes]:
        doc = json.loads(body[5:] if path != "/init" else body)
        self.calls.append((path, headers, doc, user))
        if path == "/init":
            return 204, b""
        return 200, _stream(self.exits.pop(0) if self.exits else 0, "waiting\n")


async def test_defaults_then_start_in_the_background_then_ready_until_it_succeeds() -> None:
    picod = FakePicod(0, 1, 1, 0)  # the start's shell, then the ready command thrice
    template = _built(user="app", workdir="/srv", start_cmd="serve", ready_cmd="probe")
    await template_start.apply(picod, template)
    (init, start, *readies) = picod.calls
    assert init[0] == "/init" and init[2] == {"defaultUser": "app", "defaultWorkdir": "/srv"}
    assert start[0] == "/process.Process/Start" and start[3] == "app"
    args = start[2]["process"]["args"]
    assert args[1].startswith("nohup ") and args[1].endswith("&") and args[-1] == "serve"
    assert start[2]["process"]["cwd"] == "/srv"
    assert [r[2]["process"]["args"] for r in readies] == [["-c", "probe"]] * 3


async def test_nothing_is_sent_for_a_template_without_start_settings() -> None:
    picod = FakePicod()
    assert not template_start.has_start_settings(_built())
    await template_start.apply(picod, _built())
    assert picod.calls == []


async def test_a_ready_command_that_never_succeeds_is_unavailable_with_its_output() -> None:
    picod = FakePicod(*[3] * 100)
    with pytest.raises(Unavailable, match=r"within 0.5 s \(last exit code 3; .*waiting"):
        await template_start.apply(picod, _built(ready_cmd="false"), ready_within_s=0.5)


async def test_local_mode_names_the_user_in_basic_auth() -> None:
    sent: list[tuple[str, dict[str, str]]] = []

    class Probe:
        async def request(
            self, host: str, port: int, method: str, path: str, headers: dict[str, str],
            body: bytes, limit_s: float,
        ) -> tuple[int, bytes]:  # fmt: skip
            sent.append((f"{method} {host}:{port}{path}", headers))
            return (204, b"") if path == "/init" else (200, _stream(0))

    template = _built(workdir="/srv", ready_cmd="true")
    await template_start.prepare(Probe(), "10.0.0.2", "tok", template)  # type: ignore[arg-type]
    (init, ready) = sent
    assert init == ("POST 10.0.0.2:49983/init",
                    {"Content-Type": "application/json", "X-Access-Token": "tok"})  # fmt: skip
    assert ready[0] == "POST 10.0.0.2:49983/process.Process/Start"
    assert ready[1]["Authorization"] == "Basic " + base64.b64encode(b"user:").decode()
    assert ready[1]["X-Access-Token"] == "tok"
