"""The live sandboxes a spec run points `{sandboxID}` at, and the cleanup after it.

A generated id is never a live sandbox, so on its own every sandbox operation would only
ever answer 404 and its success answers would go unchecked. So half of an operation's
positive cases are sent to a live sandbox of the run's instead: one per operation, made on
its first use (paused first for the operations that want a paused one), and replaced when a
case ends it (a kill, a timeout of 0), at most `creates_per_operation` times, which bounds
what the run costs in creates (~100 ms and a sandbox slot each). `kill_all` lists the
tenant's sandboxes and kills every one, so nothing a case made outlives the run.
"""

from __future__ import annotations

from collections import Counter

import httpx

# How long a sandbox of the run lives unless a case ends it sooner, seconds.
SANDBOX_TIMEOUT_S = 600


class LiveSandboxes:
    def __init__(self, api: httpx.Client, template: str, creates_per_operation: int) -> None:
        self._api = api
        self._template = template
        self._creates_per_operation = creates_per_operation
        self._current: dict[str, str] = {}
        self._creates: Counter[str] = Counter()
        self.made: set[str] = set()

    def for_operation(self, operation: str, paused: bool = False) -> str | None:
        """`operation`'s live sandbox, made now if it has none; None once its creates are
        used up (its cases then keep their generated ids)."""
        sandbox_id = self._current.get(operation)
        if sandbox_id is not None:
            return sandbox_id
        if self._creates[operation] >= self._creates_per_operation:
            return None
        self._creates[operation] += 1
        sandbox_id = self.create()
        if paused:
            self.pause(sandbox_id)
        self._current[operation] = sandbox_id
        return sandbox_id

    def ended(self, operation: str) -> None:
        """`operation`'s sandbox is gone: the next use makes another."""
        self._current.pop(operation, None)

    def create(self) -> str:
        body = {"templateID": self._template, "timeout": SANDBOX_TIMEOUT_S}
        response = self._api.post("/sandboxes", json=body)
        assert response.status_code == 201, response.text
        sandbox_id: str = response.json()["sandboxID"]
        self.made.add(sandbox_id)
        return sandbox_id

    def pause(self, sandbox_id: str) -> None:
        response = self._api.post(f"/sandboxes/{sandbox_id}/pause")
        assert response.status_code == 204, response.text

    def kill(self, sandbox_id: str) -> None:
        response = self._api.delete(f"/sandboxes/{sandbox_id}")
        assert response.status_code in (204, 404), response.text

    def listed(self) -> list[str]:
        """Every running or paused sandbox of the tenant, through the paged v2 list."""
        ids: list[str] = []
        params = {"state": "running,paused", "limit": "100"}
        while True:
            response = self._api.get("/v2/sandboxes", params=params)
            assert response.status_code == 200, response.text
            ids.extend(item["sandboxID"] for item in response.json())
            token = response.headers.get("x-next-token")
            if not token:
                return ids
            params["nextToken"] = token

    def kill_all(self) -> list[str]:
        """Kill every sandbox of the tenant; returns their ids."""
        ids = self.listed()
        for sandbox_id in ids:
            self.kill(sandbox_id)
        self._current.clear()
        return ids
