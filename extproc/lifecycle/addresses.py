"""Loopback addresses for sandboxes: one 127.100.x.y per live sandbox.

Linux routes all of 127.0.0.0/8 to `lo`, so any of these can be bound without setup. With
its own address each sandbox keeps E2B's `{port}` meaning: a user server on port 8000 in two
sandboxes does not collide, and the edge routes `8000-{id}` to `127.100.x.y:8000`.
"""

from __future__ import annotations

import secrets

from extproc.core.errors import ResourceExhausted

PREFIX = "127.100"
# .0.0 and .255.255 are left out: some tools treat them as network/broadcast addresses.
_FIRST, _LAST = 1, 65534


def address(index: int) -> str:
    return f"{PREFIX}.{index >> 8}.{index & 0xFF}"


def index_of(host: str) -> int | None:
    parts = host.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != PREFIX:
        return None
    return (int(parts[2]) << 8) | int(parts[3])


class Addresses:
    def __init__(self) -> None:
        self._used: set[int] = set()
        # A random start: two services on one machine (two state dirs) rarely collide, and
        # the caller probes each address before use anyway.
        self._next = _FIRST + secrets.randbelow(_LAST - _FIRST + 1)

    def take(self, host: str) -> None:
        index = index_of(host)
        if index is not None:
            self._used.add(index)

    def allocate(self) -> str:
        # Round robin: a freed address is reused last, so a stale client of a dead sandbox
        # is unlikely to reach the next one.
        for _ in range(_LAST - _FIRST + 1):
            index = self._next
            self._next = _FIRST if index >= _LAST else index + 1
            if index not in self._used:
                self._used.add(index)
                return address(index)
        raise ResourceExhausted("no free sandbox address left in 127.100.0.0/16")

    def release(self, host: str) -> None:
        index = index_of(host)
        if index is not None:
            self._used.discard(index)
