"""picod's `/init` is the orchestrator's alone: however a client spells it, through Envoy's
path normalisation and the edge's own check, it is refused exactly like `/init`."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from e2b import Sandbox

from support.gateway import Gateway

SPELLINGS = ["/init", "/%69nit", "//init", "/./init", "/x/../init", "/%2Finit", "/init?x=1"]


@pytest.mark.timeout(60)
def test_every_spelling_of_init_is_refused_like_init(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=60)
    try:
        headers = {
            "E2b-Sandbox-Id": sbx.sandbox_id,
            "E2b-Sandbox-Port": "49983",
            "X-Access-Token": sbx._envd_access_token or "",
        }
        body = json.dumps({"envVars": {"INJECTED": "by-a-tenant"}})
        answers = {path: _post_verbatim(gateway.url, path, body, headers) for path in SPELLINGS}
        reference = answers["/init"]
        assert reference[0] in (403, 404), reference
        for path, answer in answers.items():
            assert answer == reference, path
        assert sbx.commands.run("echo ${INJECTED:-unset}").stdout.strip() == "unset"
    finally:
        sbx.kill()


def _post_verbatim(url: str, path: str, body: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST with `path` on the request line exactly as given (HTTP clients normalise it)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("POST", path, body, {**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
