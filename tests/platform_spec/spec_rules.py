"""What the spec run holds the gateway to, beyond schemathesis' own checks: which operations
are served, what the rest answer, and every place an answer may differ from the spec, each
with its reason (docs/compatibility.md, "Checked against the spec", says the same to users).

The rules:
- A status is documented for the operation, or explained below: 400 for a request the spec
  calls malformed (E2B's own request validator answers 400 for any operation), a 400 to a
  well-formed request only for a rule the spec cannot express, matched by its message, an
  honest 501 only for a create field whose feature this gateway lacks, and the few
  operation-specific statuses of `EXTRA_STATUSES`.
- Every error is E2B's `{"code": <the status>, "message": "..."}`.
- A well-formed request naming a sandbox that is not live is 404, never anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from typing import Any

from schemathesis import Case, CheckContext, Response
from schemathesis.generation.meta import REQUEST_SHAPE_PROBES, coverage_scenario
from schemathesis.specs.openapi.checks import unsupported_method

SANDBOX_ID = "sandboxID"

# The spec's operations this gateway serves, and for each that names a sandbox, whether its
# live sandbox should be paused (resume wants one to resume).
SERVED: dict[str, bool | None] = {
    "GET /health": None,
    "GET /sandboxes": None,
    "POST /sandboxes": None,
    "GET /v2/sandboxes": None,
    "GET /sandboxes/{sandboxID}": False,
    "DELETE /sandboxes/{sandboxID}": False,
    "GET /sandboxes/{sandboxID}/metrics": False,
    "POST /sandboxes/{sandboxID}/pause": False,
    "POST /sandboxes/{sandboxID}/resume": True,
    "POST /sandboxes/{sandboxID}/connect": False,
    "POST /sandboxes/{sandboxID}/timeout": False,
    "POST /sandboxes/{sandboxID}/refreshes": False,
    "GET /templates": None,
    "GET /templates/{templateID}": None,
    "GET /volumes": None,
    "POST /volumes": None,
    "GET /volumes/{volumeID}": None,
    "DELETE /volumes/{volumeID}": None,
    # Template builds, tags and snapshots (issue 14). A snapshot is taken of a live sandbox;
    # a fork is judged on unknown ids only: a positive case may ask for 100 sandboxes.
    "POST /v3/templates": None,
    "GET /v2/templates": None,
    "GET /templates/{templateID}/files/{hash}": None,
    "POST /v2/templates/{templateID}/builds/{buildID}": None,
    "GET /templates/{templateID}/builds/{buildID}/status": None,
    "GET /templates/{templateID}/builds/{buildID}/logs": None,
    "DELETE /templates/{templateID}": None,
    "PATCH /templates/{templateID}": None,
    "PATCH /v2/templates/{templateID}": None,
    "POST /templates/tags": None,
    "DELETE /templates/tags": None,
    "GET /templates/{templateID}/tags": None,
    "GET /templates/aliases/{alias}": None,
    "POST /sandboxes/{sandboxID}/snapshots": False,
    "GET /snapshots": None,
    "POST /sandboxes/{sandboxID}/fork": None,
}

# Every other operation of the spec: a feature this gateway does not have, answered 501
# naming it (docs/compatibility.md lists them).
NOT_SERVED: tuple[str, ...] = (
    "GET /teams",
    "GET /teams/{teamID}/metrics",
    "GET /teams/{teamID}/metrics/max",
    "GET /sandboxes/metrics",
    "GET /sandboxes/{sandboxID}/logs",
    "GET /v2/sandboxes/{sandboxID}/logs",
    "PUT /sandboxes/{sandboxID}/network",
    "POST /v2/templates",
    "POST /templates",
    "POST /templates/{templateID}",
    "POST /templates/{templateID}/builds/{buildID}",
    "GET /nodes",
    "GET /nodes/{nodeID}",
    "POST /nodes/{nodeID}",
    "POST /admin/teams/{teamID}/sandboxes/kill",
    "GET /admin/sandboxes/running-counts",
    "POST /admin/teams/{teamID}/builds/cancel",
    "POST /admin/teams/{teamID}/api-keys",
    "DELETE /admin/teams/{teamID}/api-keys/{apiKeyID}",
    "POST /access-tokens",
    "DELETE /access-tokens/{accessTokenID}",
    "GET /api-keys",
    "POST /api-keys",
    "PATCH /api-keys/{apiKeyID}",
    "DELETE /api-keys/{apiKeyID}",
    "GET /secrets",
    "POST /secrets",
    "GET /secrets/{secretID}",
    "POST /secrets/{secretID}",
    "DELETE /secrets/{secretID}",
)

# Statuses the spec leaves out of an operation that this gateway answers with, and why.
EXTRA_STATUSES: dict[str, dict[int, str]] = {
    "POST /sandboxes": {
        404: "the template, or a volume of volumeMounts, does not exist (the spec documents no 404)"
    },
    "POST /volumes": {409: "the team has a volume of that name (names are unique per team)"},
    "DELETE /volumes/{volumeID}": {409: "a live sandbox mounts the volume"},
    "GET /templates/{templateID}": {404: "the template does not exist (no 404 in the spec)"},
    "POST /v2/templates/{templateID}/builds/{buildID}": {
        404: "the template or the build does not exist, or is another team's",
        409: "the build was started already",
    },
    "DELETE /templates/{templateID}": {
        404: "the template does not exist, or is another team's",
        409: "the template is shared (base, code-interpreter-v1) or is building",
    },
    "PATCH /templates/{templateID}": {
        404: "the template does not exist, or is another team's",
        409: "the template is shared (base, code-interpreter-v1)",
    },
    "PATCH /v2/templates/{templateID}": {
        404: "the template does not exist, or is another team's",
        409: "the template is shared (base, code-interpreter-v1)",
    },
    "POST /v3/templates": {409: "a template of another kind (a snapshot) has the name"},
    "POST /templates/tags": {409: "the target has no build to tag"},
    "POST /sandboxes/{sandboxID}/snapshots": {409: "the name is a template's, not a snapshot's"},
}

# 400s to well-formed requests: rules the spec's schemas cannot express, as E2B has them too.
# NewSandbox and ResumedSandbox have no `type: object`, so any JSON value is a valid body by
# the letter of the spec; E2B's Go server cannot decode one into its struct either (400).
_NOT_AN_OBJECT = "request body must be a JSON object"
# A timeout past the gateway's longest sandbox life: E2B's "Timeout cannot be greater than N
# hours", the same words.
_TOO_LONG = "Timeout cannot be greater than"
# The spec's own example of the filter is "user=abc&app=prod": a part without `=` is no filter.
_METADATA_FILTER = "metadata filter must be key=value pairs"
SEMANTIC_400: dict[str, tuple[str, ...]] = {
    "GET /sandboxes": (_METADATA_FILTER,),
    # A nextToken this gateway never issued (E2B refuses a malformed cursor with 400 too).
    "GET /v2/sandboxes": (_METADATA_FILTER, "invalid page token"),
    # An interval that ends before it starts.
    "GET /sandboxes/{sandboxID}/metrics": ("start (",),
    "POST /sandboxes": (
        # A `null` body or one without templateID: the spec's `required` binds objects only.
        "templateID is required",
        "templateID must not be empty",
        "Timeout must be greater than 0",
        _TOO_LONG,
        _NOT_AN_OBJECT,
        # The spec's own description of autoPauseMemory: "cannot be combined with autoResume".
        "autoResume cannot be combined",
        # v1 only (v2 is always secure): E2B hands the traffic token to secured sandboxes.
        "allowPublicTraffic: false requires a secure sandbox",
        # What a process environment can hold, and the lifecycle's bounds on user maps
        # (extproc/lifecycle/validation.py).
        "invalid env var name",
        "env var ",
        "envVars too large",
        "metadata has",
        "metadata is",
        "metadata keys must not be empty",
        # Where a volume may be mounted and how many (extproc/lifecycle/volume_paths.py), and
        # E2B's volume name pattern, which volumeMounts' schema does not repeat.
        "volume mount path",
        "a volume cannot be mounted at /",
        "at most 16 volume mounts",
        "two volumes are mounted",
        "volume mount paths",
        "invalid volume name",
    ),
    # NewVolume.name's pattern has no length limit; ours is 128 characters.
    "POST /volumes": ("invalid volume name",),
    # Names and tags as this gateway spells them (templates.py), which the spec leaves free.
    # E2B needs the name too, though the spec marks nothing required.
    "POST /v3/templates": (
        _NOT_AN_OBJECT,
        "name is required",
        "invalid template name",
        "invalid tag",
        "name must be at most",
    ),
    # A `null` body: the spec's `required` binds objects only.
    "POST /templates/tags": (
        _NOT_AN_OBJECT,
        "target is required",
        "tags is required",
        "invalid tag",
        "invalid template name",
        "tags must not be empty",
    ),
    "DELETE /templates/tags": (
        _NOT_AN_OBJECT,
        "name is required",
        "tags is required",
        "invalid tag",
        "tags must not be empty",
    ),
    # TemplateBuildStartV2 and TemplateStep have no `type: object` either.
    "POST /v2/templates/{templateID}/builds/{buildID}": (_NOT_AN_OBJECT, "steps["),
    # A nextToken this gateway never issued.
    "GET /snapshots": ("nextToken is not one",),
    # TemplateUpdateRequest has no `type: object` either.
    "PATCH /templates/{templateID}": (_NOT_AN_OBJECT,),
    "PATCH /v2/templates/{templateID}": (_NOT_AN_OBJECT,),
    "GET /templates/{templateID}/files/{hash}": ("the files hash must be",),
    "POST /sandboxes/{sandboxID}/snapshots": ("invalid snapshot name", "name must be at most"),
    "POST /sandboxes/{sandboxID}/fork": (_TOO_LONG,),
    "POST /sandboxes/{sandboxID}/resume": (_NOT_AN_OBJECT, _TOO_LONG),
    "POST /sandboxes/{sandboxID}/connect": (_TOO_LONG,),
    # The spec makes the body optional but its one field required: E2B answers 400 without it.
    "POST /sandboxes/{sandboxID}/timeout": ("timeout is required",),
}

# Create fields whose feature this gateway does not have: sent non-empty, they are a 501.
# Any `network` option but allowPublicTraffic is one, named as sent (unknown ones too: a
# network rule this gateway cannot enforce is refused, not ignored).
UNSUPPORTED_CREATE = re.compile(
    r"(the MCP gateway|IAM tokens|network\..+) is not supported by this gateway",
    re.DOTALL,
)

# Methods the spec does not list on a path but this gateway serves there (newer SDK calls).
SERVED_OUTSIDE_THE_SPEC = frozenset({"POST /v2/sandboxes"})

# Path segments a client resolves before sending (RFC 3986 dot segments): never an id.
DOT_SEGMENTS = frozenset({".", ".."})


def error_of(response: Response) -> dict[str, Any] | None:
    """The E2B error body, or None when the body is not one."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) - {"code", "message", "error_code"}:
        return None
    code, message = body.get("code"), body.get("message")
    if type(code) is not int or not isinstance(message, str):
        return None
    return body


def e2b_error_shape(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every error is `{"code": <the HTTP status>, "message": "..."}` as JSON."""
    if response.status_code < 400:
        return
    body = error_of(response)
    assert body is not None, f"not an E2B error body: {response.content[:200]!r}"
    assert body["code"] == response.status_code, f"code {body['code']} != status"
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"content-type {content_type!r}"


def undeclared_method_is_405(ctx: CheckContext, response: Response, case: Case) -> None:
    """schemathesis' own `unsupported_method` (405 with `Allow`), but for the methods a path
    has here beyond the spec's."""
    if f"{case.method.upper()} {case.operation.path}" in SERVED_OUTSIDE_THE_SPEC:
        return
    unsupported_method(ctx, response, case)


def _positive(case: Case) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def semantic_400(case: Case, response: Response) -> bool:
    """A 400 to a well-formed request for one of the rules of SEMANTIC_400."""
    if response.status_code != 400:
        return False
    message = str((error_of(response) or {}).get("message", ""))
    return any(message.startswith(rule) for rule in SEMANTIC_400.get(case.operation.label, ()))


def documented_status(ctx: CheckContext, response: Response, case: Case) -> None:
    """The status is the spec's for the operation, or one explained above."""
    if coverage_scenario(case) in REQUEST_SHAPE_PROBES:
        return  # schemathesis' own checks judge a probe of an undeclared method or type
    label = case.operation.label
    status = response.status_code
    documented = set(case.operation.responses.status_codes)
    body = error_of(response) or {}
    message = str(body.get("message", ""))
    if status == 400:
        # Malformed by the spec (E2B's validator answers 400 too), or a rule it cannot express.
        assert not _positive(case) or semantic_400(case, response), (
            f"a well-formed request got 400 {message!r}: not a rule of SEMANTIC_400[{label!r}]"
        )
        return
    if status == 501 and label == "POST /sandboxes":
        assert UNSUPPORTED_CREATE.search(message), f"501 for no unsupported feature: {message!r}"
        return
    if str(status) in documented or status in EXTRA_STATUSES.get(label, {}):
        return
    raise AssertionError(
        f"status {status} is neither documented ({sorted(documented)}) nor explained"
    )


def unknown_ids_are_not_found(
    live: Collection[str],
) -> Callable[[CheckContext, Response, Case], None]:
    """A well-formed request naming a sandbox id that is not live is 404, unless its body
    breaks a rule of SEMANTIC_400 (read before the sandbox is looked up, as E2B does)."""

    def unknown_id_is_404(ctx: CheckContext, response: Response, case: Case) -> None:
        sandbox_id = (case.path_parameters or {}).get(SANDBOX_ID)
        if sandbox_id is None or sandbox_id in live or sandbox_id in DOT_SEGMENTS:
            return
        if not _positive(case) or case.method.upper() != case.operation.method.upper():
            return
        assert response.status_code == 404 or semantic_400(case, response), (
            f"sandbox id {sandbox_id!r} is not live: expected 404, got {response.status_code}"
        )

    return unknown_id_is_404
