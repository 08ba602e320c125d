"""lifecycle/listing.py as tables: ListSandboxes' filters, order and page tokens.

The contract (the module's docstring and notes §8, `GET /v2/sandboxes`): one tenant sees only
its own sandboxes; metadata filters are all-pairs-must-match; the order is by (startedAt, id),
newest first unless ascending; pages hold at most 100; a page token names a position, so it
stays valid while sandboxes come and go, and a token that is not one of ours is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable

import pytest

from extproc.core.errors import InvalidArgument
from extproc.lifecycle.listing import MAX_PAGE, decode_token, encode_token, page
from extproc.lifecycle.sandboxes import ListQuery, Sandbox, State

T0 = 1_800_000_000.0


def sandbox(
    sandbox_id: str,
    started_at: float,
    *,
    tenant: str = "team-a",
    state: State = State.RUNNING,
    template_id: str = "base",
    metadata: dict[str, str] | None = None,
) -> Sandbox:
    return Sandbox(
        sandbox_id=sandbox_id, template_id=template_id, alias="", tenant=tenant,
        metadata=metadata or {}, env_vars={}, started_at=started_at, end_at=started_at + 300,
        state=state, cpu_count=2, memory_mb=512, disk_size_mb=0, envd_version="0.2.0",
        envd_access_token="", endpoint_host="",
    )  # fmt: skip


ALL = [
    sandbox("a1", T0 + 1, metadata={"env": "prod", "team": "x"}),
    sandbox("a2", T0 + 2, metadata={"env": "dev"}, template_id="py"),
    sandbox("a3", T0 + 3, state=State.PAUSED, metadata={"env": "prod"}),
    sandbox("a4", T0 + 3, metadata={"env": "prod", "team": "y"}),  # same start as a3
    sandbox("a5", T0 + 4, state=State.STARTING),
    sandbox("a6", T0 + 5, state=State.ENDED),
    sandbox("b1", T0 + 2.5, tenant="team-b", metadata={"env": "prod"}),
    sandbox("b2", T0 + 6, tenant="team-b", state=State.PAUSED),
]
TEMPLATES = {"base": {"base"}, "python": {"py"}, "py": {"py"}, "both": {"base", "py"}}


def ids(sandboxes: Iterable[Sandbox]) -> list[str]:
    return [s.sandbox_id for s in sandboxes]


def listed(query: ListQuery, sandboxes: list[Sandbox] = ALL) -> tuple[list[str], str, int]:
    result = page(sandboxes, query, lambda name: TEMPLATES.get(name, set()))
    return ids(result.sandboxes), result.next_page_token, result.total_running


RUNNING_PAUSED = frozenset({State.RUNNING, State.PAUSED})


@pytest.mark.parametrize(
    ("query", "expected_ids", "total_running"),
    [
        # Running and paused by default, newest first, ties newest id first.
        (ListQuery(tenant="team-a"), ["a4", "a3", "a2", "a1"], 3),
        (ListQuery(tenant="team-a", ascending=True), ["a1", "a2", "a3", "a4"], 3),
        # A tenant never sees another's; "" is every tenant (the all-tenants scope).
        (ListQuery(tenant="team-b"), ["b2", "b1"], 1),
        (ListQuery(tenant=""), ["b2", "a4", "a3", "b1", "a2", "a1"], 4),
        (ListQuery(tenant="team-c"), [], 0),
        (ListQuery(tenant="TEAM-A"), [], 0),  # names are exact
        # States.
        (ListQuery(tenant="team-a", states=frozenset({State.PAUSED})), ["a3"], 3),
        (ListQuery(tenant="team-a", states=frozenset({State.STARTING})), ["a5"], 3),
        (ListQuery(tenant="team-a", states=frozenset()), [], 3),
        # Metadata: every pair must match, values exactly.
        (ListQuery(tenant="team-a", metadata={"env": "prod"}), ["a4", "a3", "a1"], 3),
        (ListQuery(tenant="team-a", metadata={"env": "prod", "team": "x"}), ["a1"], 3),
        (ListQuery(tenant="team-a", metadata={"env": "Prod"}), [], 3),
        (ListQuery(tenant="team-a", metadata={"env": ""}), [], 3),  # absent is not empty
        (ListQuery(tenant="team-a", metadata={"nope": "prod"}), [], 3),
        (ListQuery(tenant="team-a", metadata={}), ["a4", "a3", "a2", "a1"], 3),
        # Templates by id or alias, through the resolver; an unknown name matches nothing.
        (ListQuery(tenant="team-a", template="python"), ["a2"], 3),
        (ListQuery(tenant="team-a", template="py"), ["a2"], 3),
        (ListQuery(tenant="team-a", template="both"), ["a4", "a3", "a2", "a1"], 3),
        (ListQuery(tenant="team-a", template="unknown"), [], 3),
        # Start-time bounds, inclusive.
        (ListQuery(tenant="team-a", started_after=T0 + 2), ["a4", "a3", "a2"], 3),
        (ListQuery(tenant="team-a", started_before=T0 + 2), ["a2", "a1"], 3),
        (ListQuery(tenant="team-a", started_after=T0 + 2, started_before=T0 + 2), ["a2"], 3),
        (ListQuery(tenant="team-a", started_after=T0 + 3.5), [], 3),
        (ListQuery(tenant="team-a", started_after=T0 + 4, started_before=T0 + 1), [], 3),
        # Page sizes: 0 is the maximum, more is capped.
        (ListQuery(tenant="team-a", page_size=1), ["a4"], 3),
        (ListQuery(tenant="team-a", page_size=0), ["a4", "a3", "a2", "a1"], 3),
    ],
)
def test_filters_and_order(query: ListQuery, expected_ids: list[str], total_running: int) -> None:
    got_ids, _, got_running = listed(query)
    assert (got_ids, got_running) == (expected_ids, total_running)


@pytest.mark.parametrize(
    ("started_at", "bound", "included"),
    [
        # A bound copied from a sandbox's startedAt (shown to the microsecond) includes it:
        # both bounds at one time select the sandboxes of that microsecond.
        (1000.1234564, 1000.123456, True),
        (1000.1234556, 1000.123456, True),
        (1000.123457, 1000.123456, False),
        (1000.1234554, 1000.123456, False),
    ],
)
def test_bounds_at_microsecond_precision(started_at: float, bound: float, included: bool) -> None:
    one = [sandbox("x", started_at)]
    query = ListQuery(tenant="team-a", started_after=bound, started_before=bound)
    got_ids, _, _ = listed(query, one)
    assert (got_ids == ["x"]) is included


@pytest.mark.parametrize("ascending", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_pages_cover_everything_once(ascending: bool, size: int) -> None:
    query = ListQuery(tenant="", page_size=size, ascending=ascending)
    seen: list[str] = []
    token = ""
    for _ in range(len(ALL) + 1):
        got_ids, token, _ = listed(dataclasses.replace(query, page_token=token))
        seen += got_ids
        assert len(got_ids) <= size
        if not token:
            break
    whole, last_token, _ = listed(ListQuery(tenant="", ascending=ascending))
    assert seen == whole and last_token == ""  # no token on the last page


def test_a_token_keeps_its_place_while_sandboxes_come_and_go() -> None:
    query = ListQuery(tenant="team-a", page_size=2)
    first, token, _ = listed(query)
    assert first == ["a4", "a3"]
    changed = [s for s in ALL if s.sandbox_id != "a4"] + [sandbox("a9", T0 + 9)]
    second, token, _ = listed(ListQuery(tenant="team-a", page_size=2, page_token=token), changed)
    assert (second, token) == (["a2", "a1"], "")


def test_the_page_limit() -> None:
    many = [sandbox(f"s{i:03d}", T0 + i) for i in range(MAX_PAGE + 5)]
    got_ids, token, running = listed(ListQuery(tenant="team-a", page_size=1000), many)
    assert (len(got_ids), bool(token), running) == (MAX_PAGE, True, MAX_PAGE + 5)


def _token(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


GOOD = encode_token(ALL[0], False)


@pytest.mark.parametrize(
    ("token", "ascending", "expected"),
    [
        (GOOD, False, (T0 + 1, "a1")),
        (GOOD + "==", False, (T0 + 1, "a1")),  # padding is optional
        (_token({"t": 5, "i": "x", "a": True}), True, (5.0, "x")),
        (GOOD, True, None),  # a descending token on an ascending list
        (encode_token(ALL[0], True), False, None),
        ("", False, None),
        ("!!!!", False, None),
        ("bm90IGpzb24", False, None),  # "not json"
        (_token(["t", "i"]), False, None),
        (_token({"t": "5", "i": "x", "a": False}), False, None),
        (_token({"t": 5, "i": 7, "a": False}), False, None),
        (_token({"t": 5, "i": "x"}), False, None),
        (_token({"t": 5, "i": "x", "a": 0}), False, None),  # False, not falsy
        (_token({"t": None, "i": "x", "a": False}), False, None),
        (base64.urlsafe_b64encode(b"\xff\xfe").decode(), False, None),
    ],
)
def test_decode_token(token: str, ascending: bool, expected: tuple[float, str] | None) -> None:
    if expected is not None:
        assert decode_token(token, ascending) == expected
        return
    with pytest.raises(InvalidArgument, match="invalid page token"):
        decode_token(token, ascending)


def test_a_bad_token_fails_the_listing() -> None:
    with pytest.raises(InvalidArgument, match="invalid page token"):
        listed(ListQuery(tenant="team-a", page_token="garbage"))
