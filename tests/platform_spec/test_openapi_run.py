"""schemathesis over the platform operations the gateway serves, against a real `up`, with
E2B's own OpenAPI spec: every answer is a documented (or explained) status, its body valid
against the spec's schema, every error E2B-shaped, no 5xx but an honest 501, and any id
that is not a live sandbox is 404. The operations not served are each asked once: 501.

Generation is deterministic (derandomized, fixed seed, no example database), so a failure
here reproduces on the next run. spec_rules.py holds the tables the run is judged by.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import assume
from hypothesis.internal.conjecture import providers
from hypothesis.internal.constants_ast import Constants
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
)

from platform_spec import spec_rules
from platform_spec.conftest import (
    CREATES_THROUGH_THE_RUN,
    REPO_ROOT,
    SCHEMATHESIS_CONFIG,
    TEMPLATE,
    SpecMissing,
    fail_or_skip,
    find_spec,
)
from platform_spec.live_sandboxes import LiveSandboxes
from support.gateway import Gateway

_CREATE = "POST /sandboxes"
_KILL = "DELETE /sandboxes/{sandboxID}"
_GET_TEMPLATE = "GET /templates/{templateID}"


@dataclass
class RunState:
    """What the run has done so far: positive cases seen per operation, creates let through."""

    positive_cases: Counter[str] = field(default_factory=Counter)
    creates: int = 0


@pytest.fixture(scope="module")
def run_state() -> RunState:
    return RunState()


@pytest.fixture(scope="module", autouse=True)
def generation_independent_of_the_rest_of_the_suite() -> Iterator[None]:
    """Hypothesis also draws constants found in the local modules imported so far, which
    depend on what ran before in the same process: without them, a case seen in the full
    suite is the case seen when this file runs alone. (Internal to Hypothesis: should it be
    renamed, this fails loudly rather than letting generation drift.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(providers, "_get_local_constants", Constants)
        providers.CONSTANTS_CACHE.cache.clear()  # what earlier draws cached from them
        yield
        providers.CONSTANTS_CACHE.cache.clear()


def _positive(case: Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _aim(case: Case, live: LiveSandboxes, state: RunState) -> str | None:
    """Point every other positive case at a live sandbox, or a template that exists (for a
    create, until the run's creates are spent). Returns the live sandbox id used."""
    label = case.operation.label
    if not _positive(case) or case.method.upper() != case.operation.method.upper():
        return None
    seen = state.positive_cases[label]
    state.positive_cases[label] += 1
    if seen % 2:
        return None
    if label == _CREATE:
        if isinstance(case.body, dict) and state.creates < CREATES_THROUGH_THE_RUN:
            case.body["templateID"] = TEMPLATE
        return None
    if label == _GET_TEMPLATE:
        assert case.path_parameters is not None
        case.path_parameters["templateID"] = TEMPLATE
        return None
    paused = spec_rules.SERVED[label]
    if paused is None or spec_rules.SANDBOX_ID not in (case.path_parameters or {}):
        return None
    sandbox_id = live.for_operation(label, paused=paused)
    if sandbox_id is not None:
        assert case.path_parameters is not None
        case.path_parameters[spec_rules.SANDBOX_ID] = sandbox_id
    return sandbox_id


def _created_id(response: Any) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("sandboxID") if isinstance(body, dict) else None


def served_operation_answers_as_the_spec_says(
    case: Case, gateway: Gateway, live: LiveSandboxes, run_state: RunState
) -> None:
    label = case.operation.label
    # Envoy answers a NUL in the path itself (an empty 400) before the edge sees the request.
    assume(not any("\x00" in str(value) for value in (case.path_parameters or {}).values()))
    aimed = _aim(case, live, run_state)
    headers = {"X-API-Key": gateway.api_key}
    response = case.call(base_url=gateway.url, headers=headers)
    created = _created_id(response) if label == _CREATE and response.status_code == 201 else None
    try:
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                content_type_conformance,
                response_headers_conformance,
                response_schema_conformance,
                negative_data_rejection,
                spec_rules.undeclared_method_is_405,
                ignored_auth,
                spec_rules.documented_status,
                spec_rules.e2b_error_shape,
                spec_rules.unknown_ids_are_not_found(live.made),
            ],
            headers=headers,
            transport_kwargs={"base_url": gateway.url, "headers": headers},
        )
    finally:
        if created is not None:
            run_state.creates += 1
            live.made.add(created)
            live.kill(created)
        if aimed is not None and (
            response.status_code == 404 or (label == _KILL and response.status_code == 204)
        ):
            live.ended(label)


# The spec is read at collection: without it, the test that stands for the run fails saying
# where the spec was expected (conftest.find_spec), or skips in a clone without ../shared.
try:
    _SPEC: Path | None = find_spec(REPO_ROOT)
    _MISSING = ""
except SpecMissing as missing:
    _SPEC, _MISSING = None, str(missing)

if _SPEC is not None:
    _schema = schemathesis.openapi.from_path(
        _SPEC, config=schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
    ).include(lambda ctx: ctx.operation.label in spec_rules.SERVED)
    test_served_operation_answers_as_the_spec_says = _schema.parametrize()(
        served_operation_answers_as_the_spec_says
    )
else:

    def test_served_operation_answers_as_the_spec_says() -> None:
        fail_or_skip(_MISSING)


def _spec_operations(spec_path: Path) -> set[str]:
    document = yaml.safe_load(spec_path.read_text())
    return {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }


def test_every_operation_of_the_spec_is_served_or_refused_by_name(spec_path: Path) -> None:
    operations = _spec_operations(spec_path)
    listed = set(spec_rules.SERVED) | set(spec_rules.NOT_SERVED)
    assert operations - listed == set(), "operations of the spec in neither table"
    assert listed - operations == set(), "operations in a table but not in the spec"
    assert not set(spec_rules.SERVED) & set(spec_rules.NOT_SERVED)


@pytest.mark.parametrize("operation", spec_rules.NOT_SERVED)
def test_an_operation_not_served_is_an_honest_501(operation: str, api: httpx.Client) -> None:
    method, template = operation.split(" ", 1)
    path = template
    for name in ("sandboxID", "templateID", "buildID", "teamID", "nodeID", "apiKeyID",
                 "accessTokenID", "volumeID", "secretID", "hash", "alias"):  # fmt: skip
        path = path.replace("{" + name + "}", "x1")
    assert "{" not in path, path
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    response = api.request(method, path, content=body)
    assert response.status_code == 501, response.text
    error = response.json()
    assert error["code"] == 501
    assert "not supported by this gateway" in error["message"]


def test_a_checkout_without_the_spec_fails_saying_where_it_looked(tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    repo.mkdir()
    with pytest.raises(SpecMissing, match=r"shared/specs/e2b-openapi\.yml"):
        find_spec(repo)
    specs = tmp_path / "shared" / "specs"
    specs.mkdir(parents=True)
    (specs / "e2b-openapi.yml").write_text("openapi: 3.0.0\n")
    assert find_spec(repo) == specs / "e2b-openapi.yml"
