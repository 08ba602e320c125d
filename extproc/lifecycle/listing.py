"""ListSandboxes: filtering, ordering and opaque page tokens, as pure functions.

Order is by (started_at, sandbox_id), newest first by default. A page token is urlsafe
base64 of JSON {"t": started_at, "i": id, "a": ascending} for the last item of the previous
page; it stays valid when sandboxes come and go, because it names a position, not an offset.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable

from extproc.core.errors import InvalidArgument
from extproc.lifecycle.sandboxes import ListQuery, Page, Sandbox, State

MAX_PAGE = 100


def _micros(seconds: float) -> int:
    """A time at the precision the API shows it (RFC 3339 with microseconds), so a bound
    copied from a sandbox's startedAt includes that sandbox."""
    return round(int(seconds * 1e9) / 1000)  # as messages.timestamp and then RFC 3339 round it


def encode_token(sandbox: Sandbox, ascending: bool) -> str:
    raw = json.dumps({"t": sandbox.started_at, "i": sandbox.sandbox_id, "a": ascending})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, ascending: bool) -> tuple[float, str]:
    bad = InvalidArgument("invalid page token: pass next_page_token from the previous page")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise bad from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("t"), int | float)
        or not isinstance(doc.get("i"), str)
        or doc.get("a") is not ascending
    ):
        raise bad
    return float(doc["t"]), doc["i"]


def page(
    sandboxes: Iterable[Sandbox], query: ListQuery, template_ids: Callable[[str], set[str]]
) -> Page:
    """One page of `sandboxes` matching `query`. `template_ids(name)` resolves an id or alias
    to the template ids it may name (empty set: matches nothing)."""
    size = MAX_PAGE if query.page_size == 0 else min(query.page_size, MAX_PAGE)
    wanted_templates = template_ids(query.template) if query.template else None
    cursor = decode_token(query.page_token, query.ascending) if query.page_token else None
    tenant_all = [s for s in sandboxes if not query.tenant or s.tenant == query.tenant]
    total_running = sum(1 for s in tenant_all if s.state is State.RUNNING)
    matched = [
        s
        for s in tenant_all
        if s.state in query.states
        and (wanted_templates is None or s.template_id in wanted_templates)
        and all(s.metadata.get(k) == v for k, v in query.metadata.items())
        and (query.started_after is None or _micros(s.started_at) >= _micros(query.started_after))
        and (query.started_before is None
             or _micros(s.started_at) <= _micros(query.started_before))
    ]
    matched.sort(key=lambda s: (s.started_at, s.sandbox_id), reverse=not query.ascending)
    if cursor is not None:
        if query.ascending:
            matched = [s for s in matched if (s.started_at, s.sandbox_id) > cursor]
        else:
            matched = [s for s in matched if (s.started_at, s.sandbox_id) < cursor]
    items = matched[:size]
    more = len(matched) > size
    token = encode_token(items[-1], query.ascending) if more else ""
    return Page(items, token, total_running)
