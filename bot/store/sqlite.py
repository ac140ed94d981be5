"""`SQLiteStore`: the embedded default, on aiosqlite.

The store owns its connection, its schema and its transactions: WAL, foreign keys, explicit
`BEGIN IMMEDIATE ... COMMIT` for every write, parameterised SQL only, and migrations from
`schema.sql` tracked by `PRAGMA user_version`. Coroutines share one connection, so an asyncio lock
keeps one transaction on it at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.engine.transcript import Item, item_from_dict, item_to_dict, speaker
from bot.store.base import Entry, Session, SessionKey, Status, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENT_RETENTION_S = 7 * 24 * 3600
_SESSION_COLUMNS = (
    "id, platform, channel, thread, workflow, active_agent, status, item_count, "
    "created_at, updated_at"
)
_VERSION = re.compile(r"^-- version (\d+)\s*$", re.MULTILINE)


def migrations() -> list[tuple[int, str]]:
    """The `(version, script)` blocks of schema.sql, in order."""
    text = resources.files("bot.store").joinpath("schema.sql").read_text(encoding="utf-8")
    parts = _VERSION.split(text)
    return [(int(parts[i]), parts[i + 1]) for i in range(1, len(parts), 2)]


class SQLiteStore:
    """A `SessionStore` in one SQLite file (or `:memory:`)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect, set the pragmas, and migrate to the newest schema version."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in (
                f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA foreign_keys = ON",
            ):
                await self._db.execute(pragma)
            await self._migrate()
            await self._prune_events()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
            raise

    async def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open; call open() first")
        return self._db

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        rows = await self.db.execute_fetchall("PRAGMA user_version")
        return int(next(iter(rows))[0])

    async def _migrate(self) -> None:
        current = await self.schema_version()
        known = migrations()
        newest = known[-1][0]
        if current > newest:
            raise StoreError(
                f"the database {self.path} has schema version {current}, newer than this "
                f"program's {newest}; upgrade Switchboard or use another database file"
            )
        for version, script in known:
            if version <= current:
                continue
            statements = [s.strip() for s in script.split(";") if _has_sql(s)]
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    await self.db.execute(statement)
                await self.db.execute(f"PRAGMA user_version = {version}")
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            log.info("store %s migrated to schema version %d", self.path, version)

    async def _prune_events(self) -> None:
        await self.db.execute(
            "DELETE FROM inbound_events WHERE received_at < ?", (time.time() - EVENT_RETENTION_S,)
        )

    async def _guarded(self, what: str, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` alone on the connection; translate SQLite errors into `StoreError`."""
        async with self._lock:
            try:
                return await work(self.db)
            except sqlite3.Error as exc:
                raise StoreError(f"{what} failed: {exc}") from exc

    async def _write(self, what: str, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` in one `BEGIN IMMEDIATE` transaction, rolled back on any error."""

        async def transaction(db: aiosqlite.Connection) -> T:
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            return result

        return await self._guarded(what, transaction)

    async def find_session(self, key: SessionKey) -> Session | None:
        async def work(db: aiosqlite.Connection) -> Session | None:
            rows = await db.execute_fetchall(
                f"SELECT {_SESSION_COLUMNS} FROM sessions "
                "WHERE platform = ? AND channel = ? AND thread = ? ORDER BY id DESC LIMIT 1",
                (key.platform, key.channel, key.thread),
            )
            return _session(next(iter(rows), None))

        return await self._guarded("find_session", work)

    async def get_session(self, session_id: int) -> Session | None:
        async def work(db: aiosqlite.Connection) -> Session | None:
            rows = await db.execute_fetchall(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            )
            return _session(next(iter(rows), None))

        return await self._guarded("get_session", work)

    async def find_thread(self, thread: str) -> Session | None:
        async def work(db: aiosqlite.Connection) -> Session | None:
            rows = await db.execute_fetchall(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE thread = ? "
                "ORDER BY id DESC LIMIT 1",
                (thread,),
            )
            return _session(next(iter(rows), None))

        return await self._guarded("find_thread", work)

    async def open_session(self, key: SessionKey, workflow: str, agent: str) -> Session:
        async def work(db: aiosqlite.Connection) -> Session:
            now = time.time()
            rows = await db.execute_fetchall(
                "INSERT INTO sessions (platform, channel, thread, workflow, active_agent, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                f"RETURNING {_SESSION_COLUMNS}",
                (key.platform, key.channel, key.thread, workflow, agent, now, now),
            )
            session = _session(next(iter(rows)))
            assert session is not None
            return session

        return await self._write("open_session", work)

    async def append(
        self,
        session_id: int,
        items: Sequence[Item],
        *,
        active_agent: str | None = None,
        status: Status | None = None,
        event: tuple[str, str] | None = None,
    ) -> Session | None:
        async def work(db: aiosqlite.Connection) -> Session | None:
            now = time.time()
            if event is not None:
                cursor = await db.execute(
                    "INSERT INTO inbound_events (platform, event_id, session_id, received_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (event[0], event[1], session_id, now),
                )
                if cursor.rowcount == 0:
                    return None
            rows = await db.execute_fetchall(
                "UPDATE sessions SET item_count = item_count + ?, "
                "active_agent = coalesce(?, active_agent), status = coalesce(?, status), "
                f"updated_at = ? WHERE id = ? RETURNING {_SESSION_COLUMNS}",
                (len(items), active_agent, status, now, session_id),
            )
            session = _session(next(iter(rows), None))
            if session is None:
                raise StoreError(f"append failed: no session {session_id}")
            first = session.item_count - len(items) + 1
            await db.executemany(
                "INSERT INTO items (session_id, seq, kind, agent, body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        session_id,
                        first + offset,
                        item.kind,
                        speaker(item),
                        json.dumps(item_to_dict(item), ensure_ascii=False),
                        now,
                    )
                    for offset, item in enumerate(items)
                ],
            )
            return session

        return await self._write("append", work)

    async def seen_event(self, platform: str, event_id: str) -> bool:
        async def work(db: aiosqlite.Connection) -> bool:
            rows = await db.execute_fetchall(
                "SELECT 1 FROM inbound_events WHERE platform = ? AND event_id = ?",
                (platform, event_id),
            )
            return bool(list(rows))

        return await self._guarded("seen_event", work)

    async def recent(self, session_id: int, limit: int) -> list[Entry]:
        async def work(db: aiosqlite.Connection) -> list[Entry]:
            rows = await db.execute_fetchall(
                "SELECT seq, created_at, kind, body FROM items WHERE session_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (session_id, limit),
            )
            return [_entry(row) for row in reversed(list(rows))]

        return await self._guarded("recent", work)

    async def first_user_entry(self, session_id: int) -> Entry | None:
        async def work(db: aiosqlite.Connection) -> Entry | None:
            rows = await db.execute_fetchall(
                "SELECT seq, created_at, kind, body FROM items "
                "WHERE session_id = ? AND kind = 'user' ORDER BY seq LIMIT 1",
                (session_id,),
            )
            row = next(iter(rows), None)
            return None if row is None else _entry(row)

        return await self._guarded("first_user_entry", work)

    async def entries(self, session_id: int) -> list[Entry]:
        async def work(db: aiosqlite.Connection) -> list[Entry]:
            rows = await db.execute_fetchall(
                "SELECT seq, created_at, kind, body FROM items WHERE session_id = ? ORDER BY seq",
                (session_id,),
            )
            return [_entry(row) for row in rows]

        return await self._guarded("entries", work)

    async def list_sessions(self, limit: int = 50) -> list[Session]:
        async def work(db: aiosqlite.Connection) -> list[Session]:
            rows = await db.execute_fetchall(
                f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY updated_at DESC, id DESC "
                "LIMIT ?",
                (limit,),
            )
            return [session for row in rows if (session := _session(row)) is not None]

        return await self._guarded("list_sessions", work)


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def _session(row: Any) -> Session | None:
    if row is None:
        return None
    return Session(
        id=row[0],
        key=SessionKey(row[1], row[2], row[3]),
        workflow=row[4],
        active_agent=row[5],
        status=row[6],
        item_count=row[7],
        created_at=row[8],
        updated_at=row[9],
    )


def _entry(row: Any) -> Entry:
    return Entry(seq=row[0], at=row[1], item=item_from_dict(row[2], json.loads(row[3])))
