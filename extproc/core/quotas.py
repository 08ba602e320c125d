"""Per-tenant quotas and the token bucket that enforces the rate-shaped ones.

The quotas live next to the API keys, in the ConfigMap-shaped `e2b-api-key-config` document
(the local key file or the cluster's ConfigMap), under the data key `quotas`, as one JSON
string: `{"<namespace>": {"maxSandboxes": 20, "createsPerMinute": 60,
"requestsPerSecond": 50}, "default": {...}}`. A field a namespace leaves out comes from the
`default` entry, then from `BUILTIN` (generous, so an unconfigured gateway behaves as before).

Why a token bucket for both rates: one float pair per key, O(1) per request, no timestamps to
keep (a sliding log would hold up to `rate` entries per key), and a full bucket is the same as
no bucket, so idle keys can be dropped without changing any answer. Time is passed in by the
caller (monotonic seconds), which keeps this module pure and its tests clock-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from extproc.core.documents import json_object
from extproc.core.errors import InvalidArgument

QUOTAS_KEY = "quotas"
DEFAULT_ENTRY = "default"


@dataclass(frozen=True, slots=True)
class Quota:
    """What one namespace (tenant) may use. 0 for `max_sandboxes` means the gateway's max."""

    max_sandboxes: int = 0  # running + paused sandboxes at once; 0: only --max-sandboxes caps
    creates_per_minute: int = 600  # sandbox creates per minute (token bucket, burst = this)
    requests_per_second: int = 1000  # platform API requests per second per API key


BUILTIN = Quota()
# JSON field -> dataclass field.
_FIELDS = {
    "maxSandboxes": "max_sandboxes",
    "createsPerMinute": "creates_per_minute",
    "requestsPerSecond": "requests_per_second",
}


@dataclass(frozen=True, slots=True)
class QuotaTable:
    namespaces: Mapping[str, Quota]
    default: Quota = BUILTIN

    def for_namespace(self, namespace: str) -> Quota:
        return self.namespaces.get(namespace, self.default)


DEFAULT_TABLE = QuotaTable(MappingProxyType({}))


def _entry(name: str, value: Any, base: Quota) -> Quota:
    where = f"{QUOTAS_KEY}[{name!r}]"
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object, got {type(value).__name__}")
    changes: dict[str, int] = {}
    for key, number in value.items():
        field = _FIELDS.get(key)
        if field is None:
            raise InvalidArgument(
                f"{where}: unknown field {key!r}, expected one of {', '.join(_FIELDS)}"
            )
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidArgument(f"{where}.{key} must be a non-negative integer, got {number!r}")
        if number == 0 and field != "max_sandboxes":
            raise InvalidArgument(f"{where}.{key} must be at least 1")
        changes[field] = number
    return replace(base, **changes)


def parse_quotas(text: str | None) -> QuotaTable:
    """The table from the `quotas` JSON string (absent or empty: the defaults).

    Raises InvalidArgument naming the entry and field; callers log it and keep the defaults.
    """
    if not text or not text.strip():
        return DEFAULT_TABLE
    document = json_object(text, QUOTAS_KEY, "a JSON object of namespace -> quota")
    default = _entry(DEFAULT_ENTRY, document.get(DEFAULT_ENTRY, {}), BUILTIN)
    namespaces = {
        name: _entry(name, value, default)
        for name, value in document.items()
        if name != DEFAULT_ENTRY
    }
    return QuotaTable(MappingProxyType(namespaces), default)


class TokenBucket:
    """`rate` tokens per second, at most `capacity` held; an admitted event spends `cost`
    tokens (one by default)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        self.stamp = now
        if tokens >= cost:
            self.tokens = tokens - cost
            return True
        self.tokens = tokens
        return False

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


class RateLimiter:
    """One token bucket per key (an API key hash, a tenant), created on first use.

    The rate may change between calls (the quota file was edited): the bucket keeps its
    tokens and takes the new rate. Buckets that have refilled are dropped once there are more
    than `max_keys`, which bounds memory without changing any answer.
    """

    __slots__ = ("_buckets", "_max_keys")

    def __init__(self, max_keys: int = 4096) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._max_keys = max_keys

    def allow(self, key: str, rate_per_s: float, burst: float, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(rate_per_s, burst, now)
        elif bucket.rate != rate_per_s or bucket.capacity != burst:
            bucket.rate, bucket.capacity = rate_per_s, burst
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
