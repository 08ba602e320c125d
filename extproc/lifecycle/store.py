"""SQLite state of the local backend, so sandboxes outlive a lifecycle restart.

WAL mode; one writer connection owned by one task that drains a queue and commits every
queued change in one transaction (group commit: 50 concurrent Creates cost a few fsyncs, not
50). The connection runs in a single worker thread because sqlite3 is blocking; callers only
await. Reads at run time come from the backend's in-memory index; SQLite is read once, at
start, to re-adopt. `synchronous=NORMAL` keeps commits durable across a process crash (the
case re-adoption exists for), not across power loss.

A write that fails (a full disk: SQLITE_FULL, raised as ResourceExhausted) is rolled back
and fails its callers only; the writer goes on, and the next write after space is freed
commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import ResourceExhausted
from extproc.lifecycle.sandboxes import OnTimeout, PauseMode, Sandbox, State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
  sandbox_id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  template_id TEXT NOT NULL,
  alias TEXT NOT NULL,
  metadata TEXT NOT NULL,
  env_vars TEXT NOT NULL,
  started_at REAL NOT NULL,
  end_at REAL NOT NULL,
  state INTEGER NOT NULL,
  cpu_count INTEGER NOT NULL,
  memory_mb INTEGER NOT NULL,
  disk_size_mb INTEGER NOT NULL,
  envd_version TEXT NOT NULL,
  endpoint_host TEXT NOT NULL,
  on_timeout INTEGER NOT NULL,
  auto_resume INTEGER NOT NULL,
  secure INTEGER NOT NULL,
  allow_internet_access INTEGER NOT NULL,
  end_reason TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  pid INTEGER NOT NULL,
  pid_start INTEGER NOT NULL,
  pooled INTEGER NOT NULL,
  allow_public_traffic INTEGER NOT NULL DEFAULT 1,
  timeout_pause_mode INTEGER NOT NULL DEFAULT 1,
  pause_mode INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS sandboxes_live ON sandboxes (state);
-- Rebuilding the Idempotency-Key index at start reads the last day's keyed rows only.
CREATE INDEX IF NOT EXISTS sandboxes_idempotency ON sandboxes (started_at)
  WHERE idempotency_key != '';
"""
_COLUMNS = (
    "sandbox_id", "tenant", "template_id", "alias", "metadata", "env_vars", "started_at",
    "end_at", "state", "cpu_count", "memory_mb", "disk_size_mb", "envd_version", "endpoint_host",
    "on_timeout", "auto_resume", "secure", "allow_internet_access", "end_reason", "idempotency_key",
    "pid", "pid_start", "pooled", "allow_public_traffic", "timeout_pause_mode", "pause_mode",
)  # fmt: skip
# Columns added after the first release, with what rows written before them mean: every
# sandbox was public, and every pause was a full one (SIGSTOP).
_ADDED_COLUMNS = {
    "allow_public_traffic": "INTEGER NOT NULL DEFAULT 1",
    "timeout_pause_mode": "INTEGER NOT NULL DEFAULT 1",
    "pause_mode": "INTEGER NOT NULL DEFAULT 1",
}
# Column names are constants, never input: these f-strings are not injectable.
_UPSERT = (
    f"INSERT OR REPLACE INTO sandboxes ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
# Ended rows are history; keep a day of them for debugging, then drop them. They also carry
# the Idempotency-Key of a killed sandbox: a row ends after it starts, so it outlives its key.
_PRUNE = "DELETE FROM sandboxes WHERE state = ? AND end_at < ?"
_IDEMPOTENCY_KEYS = (
    "SELECT tenant, idempotency_key, sandbox_id, started_at FROM sandboxes "
    "WHERE idempotency_key != '' AND started_at >= ? AND pooled = 0 ORDER BY started_at"
)


def _domain(error: sqlite3.Error, path: Path) -> Exception:
    """A full disk is the operator's to fix, not our bug: say so, by name."""
    if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
        return error
    full = ResourceExhausted(
        f"no space left on the device holding the sandbox database ({path.parent}); "
        "free space there and retry"
    )
    full.__cause__ = error
    return full


@dataclass(frozen=True)
class Row:
    """A sandbox plus what only the local runtime needs to find its processes again."""

    sandbox: Sandbox
    # The per-sandbox supervisor's pid and its start time in clock ticks since boot
    # (/proc/PID/stat field 22), which guards against pid reuse; `processes.NO_PROCESS`
    # while it has none (paused, filesystem only).
    pid: int
    pid_start: int
    # True while it waits in the warm pool (never handed to a tenant).
    pooled: bool


def _encode(row: Row) -> tuple[object, ...]:
    s = row.sandbox
    return (
        s.sandbox_id, s.tenant, s.template_id, s.alias, json.dumps(s.metadata),
        json.dumps(s.env_vars), s.started_at, s.end_at, int(s.state), s.cpu_count,
        s.memory_mb, s.disk_size_mb, s.envd_version, s.endpoint_host, int(s.on_timeout),
        int(s.auto_resume), int(s.secure), int(s.allow_internet_access), s.end_reason,
        s.idempotency_key, row.pid, row.pid_start, int(row.pooled),
        int(s.allow_public_traffic), int(s.timeout_pause_mode), int(s.pause_mode),
    )  # fmt: skip


def _decode(values: sqlite3.Row, token: str) -> Row:
    v = dict(zip(_COLUMNS, values, strict=True))
    sandbox = Sandbox(
        sandbox_id=v["sandbox_id"], template_id=v["template_id"], alias=v["alias"],
        tenant=v["tenant"], metadata=json.loads(v["metadata"]),
        env_vars=json.loads(v["env_vars"]), started_at=v["started_at"], end_at=v["end_at"],
        state=State(v["state"]), cpu_count=v["cpu_count"], memory_mb=v["memory_mb"],
        disk_size_mb=v["disk_size_mb"], envd_version=v["envd_version"],
        envd_access_token=token, endpoint_host=v["endpoint_host"],
        on_timeout=OnTimeout(v["on_timeout"]), auto_resume=bool(v["auto_resume"]),
        secure=bool(v["secure"]), allow_internet_access=bool(v["allow_internet_access"]),
        end_reason=v["end_reason"], idempotency_key=v["idempotency_key"],
        allow_public_traffic=bool(v["allow_public_traffic"]),
        timeout_pause_mode=PauseMode(v["timeout_pause_mode"]),
        pause_mode=PauseMode(v["pause_mode"]),
    )  # fmt: skip
    return Row(sandbox, v["pid"], v["pid_start"], bool(v["pooled"]))


class Store:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifecycle-sqlite")
        self._queue: asyncio.Queue[tuple[Row, asyncio.Future[None]]] = asyncio.Queue()
        self._conn: sqlite3.Connection | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        columns = {c[1] for c in conn.execute("PRAGMA table_info(sandboxes)")}
        for name, definition in _ADDED_COLUMNS.items():
            if name not in columns:  # a database from before the column
                conn.execute(f"ALTER TABLE sandboxes ADD COLUMN {name} {definition}")
        return conn

    async def open(self, prune_before: float) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._open)
        await loop.run_in_executor(
            self._executor, self._conn.execute, _PRUNE, (int(State.ENDED), prune_before)
        )
        self._writer = asyncio.create_task(self._write_loop(), name="lifecycle-store-writer")

    async def load_live(self) -> list[Row]:
        """Every row not ENDED. Tokens are filled in by the caller (they are not stored)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("store not open")

        def read() -> list[sqlite3.Row]:
            cursor = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM sandboxes WHERE state != ?",  # noqa: S608
                (int(State.ENDED),),
            )
            return cursor.fetchall()

        rows = await asyncio.get_running_loop().run_in_executor(self._executor, read)
        return [_decode(r, "") for r in rows]

    async def _query(self, sql: str, params: tuple[object, ...]) -> list[sqlite3.Row]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("store not open")

        def read() -> list[sqlite3.Row]:
            return conn.execute(sql, params).fetchall()

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, read)
        except sqlite3.Error as exc:
            raise _domain(exc, self._path) from exc

    async def load_idempotency_keys(self, since: float) -> list[tuple[str, str, str, float]]:
        """(tenant, key, sandbox id, started at) of keyed sandboxes started at or after
        `since`, oldest first, ended ones included."""
        rows = await self._query(_IDEMPOTENCY_KEYS, (since,))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def get(self, sandbox_id: str) -> Row | None:
        """One row, ENDED or not (its token is left for the caller to fill in)."""
        rows = await self._query(
            f"SELECT {', '.join(_COLUMNS)} FROM sandboxes WHERE sandbox_id = ?",  # noqa: S608
            (sandbox_id,),
        )
        return _decode(rows[0], "") if rows else None

    async def prune(self, before: float) -> None:
        """Drop ENDED rows that ended before `before` (also done once at `open`)."""
        await self._query(_PRUNE, (int(State.ENDED), before))

    async def put(self, row: Row) -> None:
        """Insert or replace `row`; returns once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        await self._queue.put((row, future))
        await future

    def _commit(self, rows: list[Row]) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("store not open")
        conn.execute("BEGIN")
        try:
            conn.executemany(_UPSERT, [_encode(r) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            # A COMMIT that fails (SQLITE_FULL: the WAL cannot grow) may leave the transaction
            # open; every later BEGIN would then fail and wedge the writer. End it here.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # Last write wins per sandbox inside one transaction, as it would one by one.
            try:
                await loop.run_in_executor(self._executor, self._commit, [r for r, _ in batch])
            except Exception as exc:  # every waiter learns the write failed; the loop goes on
                error = _domain(exc, self._path) if isinstance(exc, sqlite3.Error) else exc
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        if self._writer is not None:
            # Let queued writes land before stopping the writer.
            await asyncio.gather(*self._pending, return_exceptions=True)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
