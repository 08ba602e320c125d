"""The app in process: lazily built filesystem service, and shutdown releasing watchers."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx

from extproc.picod.app import build_app
from extproc.picod.settings import PicodSettings

JSON = {"content-type": "application/json", "connect-protocol-version": "1"}


async def _lifespan_shutdown(app: Any) -> list[str]:
    """Run one ASGI lifespan cycle (startup, then shutdown); the messages sent back."""
    inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    sent: list[str] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    return sent


async def test_shutdown_releases_polled_watchers(tmp_path: Path) -> None:
    app = build_app(PicodSettings(home=tmp_path, no_auth=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://picod") as client:
        created = await client.post(
            "/filesystem.Filesystem/CreateWatcher", json={"path": str(tmp_path)}, headers=JSON
        )
        assert created.status_code == 200, created.text
        watcher_id = created.json()["watcherId"]
        events = "/filesystem.Filesystem/GetWatcherEvents"
        before = await client.post(events, json={"watcherId": watcher_id}, headers=JSON)
        assert before.status_code == 200, before.text

        sent = await _lifespan_shutdown(app)

        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        after = await client.post(events, json={"watcherId": watcher_id}, headers=JSON)
        assert after.status_code == 404, after.text
        assert after.json()["code"] == "not_found"


async def test_close_without_filesystem_use_builds_nothing(tmp_path: Path) -> None:
    app = build_app(PicodSettings(home=tmp_path, no_auth=True))
    app.close()  # the filesystem service was never built: nothing to release
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://picod") as client:
        listed = await client.post(
            "/filesystem.Filesystem/ListDir", json={"path": str(tmp_path)}, headers=JSON
        )
    assert listed.status_code == 200, listed.text
