"""SQLite record of volumes and of which live sandbox mounts which, so both outlive a
lifecycle restart.

A file of its own (`volumes.sqlite3`, 0600 like the sandboxes' database) rather than tables
in `store`: volumes change rarely, outside the sandboxes' group-committed write path, and a
volume outlives every sandbox row. The mount rows are written before the Create that made
them returns; after a restart the rows of sandboxes that were not re-adopted are dropped
(`drop_mounts_except`), so a crash between the two databases costs nothing but a row.
Each call is one short transaction on a single worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from extproc.lifecycle.sandboxes import VolumeMount

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
  volume_id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  created_at REAL NOT NULL,
  UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS mounts (
  sandbox_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  volume_id TEXT NOT NULL,
  name TEXT NOT NULL,
  path TEXT NOT NULL,
  PRIMARY KEY (sandbox_id, position)
);
"""


@dataclass(frozen=True)
class VolumeRow:
    volume_id: str
    tenant: str
    name: str
    created_at: float


@dataclass(frozen=True)
class MountRow:
    sandbox_id: str
    volume_id: str
    mount: VolumeMount


class VolumeStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="volume-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("volume store not open")

        def transaction() -> T:
            with conn:  # commits, or rolls back on an exception
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, transaction)

    async def open(self) -> tuple[list[VolumeRow], list[MountRow]]:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self._path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            return conn

        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)
        for database in self._path.parent.glob(self._path.name + "*"):
            database.chmod(0o600)

        def read(conn: sqlite3.Connection) -> tuple[list[VolumeRow], list[MountRow]]:
            volumes = [VolumeRow(*row) for row in conn.execute(
                "SELECT volume_id, tenant, name, created_at FROM volumes")]  # fmt: skip
            mounts = [
                MountRow(sandbox_id, volume_id, VolumeMount(name, path))
                for sandbox_id, volume_id, name, path in conn.execute(
                    "SELECT sandbox_id, volume_id, name, path FROM mounts "
                    "ORDER BY sandbox_id, position"
                )
            ]
            return volumes, mounts

        return await self._call(read)

    async def add_volume(self, row: VolumeRow) -> None:
        await self._call(lambda conn: conn.execute(
            "INSERT INTO volumes (volume_id, tenant, name, created_at) VALUES (?, ?, ?, ?)",
            (row.volume_id, row.tenant, row.name, row.created_at)))  # fmt: skip

    async def remove_volume(self, volume_id: str) -> None:
        await self._call(
            lambda conn: conn.execute("DELETE FROM volumes WHERE volume_id = ?", (volume_id,))
        )

    async def set_mounts(self, sandbox_id: str, rows: list[MountRow]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM mounts WHERE sandbox_id = ?", (sandbox_id,))
            conn.executemany(
                "INSERT INTO mounts (sandbox_id, position, volume_id, name, path) "
                "VALUES (?, ?, ?, ?, ?)",
                [(sandbox_id, i, r.volume_id, r.mount.name, r.mount.path)
                 for i, r in enumerate(rows)],
            )  # fmt: skip

        await self._call(write)

    async def drop_mounts_except(self, sandbox_ids: Iterable[str]) -> None:
        keep = list(sandbox_ids)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep (sandbox_id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM keep")
            conn.executemany("INSERT INTO keep VALUES (?)", [(s,) for s in keep])
            conn.execute("DELETE FROM mounts WHERE sandbox_id NOT IN (SELECT sandbox_id FROM keep)")

        await self._call(write)

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
