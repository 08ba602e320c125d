"""One real gateway (`agentcube-e2b up`, local sandboxes) for the spec run, E2B's published
OpenAPI spec read from `../shared/specs/` beside the repo (where CI lays it), and the
schemathesis configuration that keeps the run deterministic and under two minutes.

The spec is reference data that is not copied into the project, so a checkout without it
cannot run these tests: they fail and say where the file was expected, rather than skip
and let a run that checked nothing look green.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from platform_spec.live_sandboxes import LiveSandboxes
from support.gateway import Gateway, running_gateway

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_NAME = "e2b-openapi.yml"
TEMPLATE = "base"
# Budget (2 cores, < 2 minutes for the whole run): fuzzed cases per operation on top of the
# deterministic coverage cases, creates per sandbox operation, creates let through POST
# /sandboxes itself.
MAX_EXAMPLES = 25
CREATES_PER_OPERATION = 3
CREATES_THROUGH_THE_RUN = 3
SEED = 12
# schemathesis' configuration for the run (its `schemathesis.toml` keys). The gateway's URL and
# API key are known only once `up` runs, so the test passes them with each call.
SCHEMATHESIS_CONFIG = {
    "seed": SEED,
    "request-timeout": 60,
    "suppress-health-check": ["all"],
    "generation": {
        "mode": "all",
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
        # The API key is sent with every call; random credentials would only be overridden.
        "with-security-parameters": False,
    },
    # Nothing a response says steers generation (sandbox ids differ from run to run).
    "phases": {
        "stateful": {"enabled": False},
        "examples": {"extra-data-sources": {"responses": False}},
        "coverage": {
            "extra-data-sources": {"responses": False},
            # Not QUERY: Envoy's HTTP/1 codec refuses a method it does not know (an empty
            # 400) before any filter runs, so the answer is not the gateway's to shape.
            "unexpected-methods": ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE"],
        },
        "fuzzing": {
            "extra-data-sources": {"responses": False},
            "error-feedback": {"enabled": False},
        },
    },
    # An unsupported feature's honest 501 is not a server error; spec_rules.documented_status
    # holds it to the create fields that have one.
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]}},
}


class SpecMissing(Exception):
    pass


def find_spec(repo_root: Path) -> Path:
    """E2B's OpenAPI spec at `../shared/specs/` beside `repo_root`; SpecMissing if absent."""
    path = repo_root.parent / "shared" / "specs" / SPEC_NAME
    if not path.is_file():
        raise SpecMissing(
            f"E2B's OpenAPI spec is not at {path}: the platform API spec run reads it from "
            "../shared/specs/ beside the repository (CI's layout). Put the shared/ directory "
            "beside the clone to run it."
        )
    return path


def shared_absent() -> bool:
    """No ../shared beside the clone at all: a user's own clone, where shared/specs/README.md
    says spec-reading tests skip. CI lays ../shared out, so a missing spec there fails."""
    return not (REPO_ROOT.parent / "shared").is_dir()


def fail_or_skip(message: str) -> NoReturn:
    if shared_absent():
        pytest.skip(f"../shared is not beside the clone: {message}")
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="package")
def spec_path() -> Path:
    try:
        return find_spec(REPO_ROOT)
    except SpecMissing as error:
        fail_or_skip(str(error))


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("spec-gateway")
    with running_gateway(state, state.parent / "spec-gateway.log") as gateway:
        yield gateway


@pytest.fixture(scope="package")
def api(gateway: Gateway) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": gateway.api_key}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def live(api: httpx.Client) -> Iterator[LiveSandboxes]:
    sandboxes = LiveSandboxes(api, TEMPLATE, CREATES_PER_OPERATION)
    yield sandboxes
    sandboxes.kill_all()
    assert sandboxes.listed() == [], "sandboxes outlived the spec run"
