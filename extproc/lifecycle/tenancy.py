"""Who may see a sandbox: the rule both backends' indexes are read through.

An empty tenant reads every tenant's sandboxes (the edge's sandbox directory needs that; the
servicer lets only a caller with the all-tenants scope leave it empty, `service`). Another
tenant's sandbox is indistinguishable from a missing one, so ids cannot be enumerated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from extproc.core.ids import not_found

T = TypeVar("T")


def find(index: Mapping[str, T], sandbox_id: str, tenant: str, tenant_of: Callable[[T], str]) -> T:
    """`index[sandbox_id]` if `tenant` may see it; NotFound, worded as for a missing id, if
    it is absent or another tenant's."""
    found = index.get(sandbox_id)
    if found is None or (tenant and tenant_of(found) != tenant):
        raise not_found(sandbox_id)
    return found
