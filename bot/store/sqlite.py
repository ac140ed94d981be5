"""`SQLiteStore`: the embedded default, on aiosqlite.

The store owns its connection, its schema and its transactions: WAL, foreign keys, explicit
`BEGIN IMMEDIATE ... COMMIT` for every write, parameterised SQL only, and migrations from
`schema.sql` tracked by `PRAGMA user_version`.

Each store operation is one plain function run whole on aiosqlite's connection thread: one
thread hop per operation instead of one per statement (which cost ~35 hops and ~5 ms per
conversation), and no two operations can interleave, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from bot.engine.transcript import (
    Item,
)
from bot.store import sqlite_ops as ops
from bot.store.base import (
    Case,
    CaseAction,
    CaseStatus,
    Entry,
    ModelCallRecord,
    ModelUsage,
    Outgoing,
    Received,
    Session,
    SessionKey,
    Status,
    StoreError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class SQLiteStore:
    """A `SessionStore` in one SQLite file (or `:memory:`)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Connect, set the pragmas, and migrate to the newest schema version."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._call("open", ops.prepare, self.path, self._busy_timeout_ms)
        except BaseException:
            await self.close()
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
        """The aiosqlite connection (tests and diagnostics only)."""
        if self._db is None:
            raise StoreError("the store is not open; call open() first")
        return self._db

    async def _call(self, what: str, work: Callable[..., T], *args: Any) -> T:
        """Run `work(connection, *args)` on the connection thread; translate SQLite errors.

        A database locked by another process beyond the busy timeout is retried with backoff
        (each operation is one transaction, rolled back on failure, so a retry is clean).
        """
        db = self.db
        for attempt in range(ops.LOCK_RETRIES + 1):
            try:
                # aiosqlite runs queued functions on its thread; `_execute` is how its own
                # methods queue one. Pinned below 0.23 in pyproject; store tests use every path.
                result: T = await db._execute(lambda: work(db._conn, *args))  # type: ignore[no-untyped-call]
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or attempt == ops.LOCK_RETRIES:
                    raise StoreError(f"{what} failed: {exc}") from exc
                log.warning("store %s: %s (%s); retrying", self.path, exc, what)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
            except sqlite3.Error as exc:
                raise StoreError(f"{what} failed: {exc}") from exc
            else:
                return result
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def thread_lock(self, key: SessionKey) -> AsyncIterator[None]:
        """One process owns a SQLite file, and its lanes already order each thread."""
        yield

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        return await self._call("schema_version", ops.user_version)

    async def find_session(self, key: SessionKey) -> Session | None:
        return await self._call("find_session", ops.find_session, key)

    async def get_session(self, session_id: int) -> Session | None:
        return await self._call("get_session", ops.one_session, "id = ?", (session_id,))

    async def find_thread(self, thread: str) -> Session | None:
        return await self._call("find_thread", ops.one_session, "thread = ?", (thread,))

    async def open_session(self, key: SessionKey, workflow: str, agent: str) -> Session:
        return await self._call("open_session", ops.write, ops.open_session, key, workflow, agent)

    async def receive(
        self,
        key: SessionKey,
        item: Item,
        *,
        event: tuple[str, str] | None,
        workflow: str,
        start_agent: str,
        may_open: bool,
    ) -> Received:
        return await self._call(
            "receive", ops.write, ops.receive, key, item, event, workflow, start_agent, may_open
        )

    async def append(
        self,
        session_id: int,
        items: Sequence[Item],
        *,
        active_agent: str | None = None,
        status: Status | None = None,
        event: tuple[str, str] | None = None,
        usage: ModelUsage | None = None,
        open_case: tuple[str, str | None] | None = None,
        posts: Sequence[dict[str, Any]] = (),
        delivered: int = 0,
    ) -> Session | None:
        return await self._call(
            "append",
            ops.write,
            ops.append_step,
            session_id,
            items,
            active_agent,
            status,
            event,
            usage,
            open_case,
            tuple(posts),
            delivered,
        )

    async def unsent(self, session_id: int) -> list[Outgoing]:
        return await self._call(
            "unsent", ops.select_outgoing, "o.session_id = ?", (session_id,), 1000
        )

    async def due(self, now: float, limit: int = 100) -> list[Outgoing]:
        return await self._call("due", ops.select_outgoing, "o.next_attempt_at <= ?", (now,), limit)

    async def mark_sent(self, session_id: int, count: int) -> None:
        if count:
            await self._call("mark_sent", ops.write, ops.mark_sent, session_id, count)

    async def mark_failed(self, session_id: int, error: str, retry_at: float) -> None:
        await self._call(
            "mark_failed", ops.write, ops.mark_failed, session_id, error[:500], retry_at
        )

    async def seen_event(self, platform: str, event_id: str) -> bool:
        return await self._call("seen_event", ops.seen_event, platform, event_id)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        return await self._call("claim_event", ops.write, ops.claim_event, platform, event_id)

    async def recent(self, session_id: int, limit: int) -> list[Entry]:
        return await self._call("recent", ops.recent_entries, session_id, limit)

    async def first_user_entry(self, session_id: int) -> Entry | None:
        return await self._call("first_user_entry", ops.first_user_entry, session_id)

    async def entries(self, session_id: int) -> list[Entry]:
        return await self._call("entries", ops.all_entries, session_id)

    async def list_sessions(self, limit: int = 50) -> list[Session]:
        return await self._call("list_sessions", ops.list_sessions, limit)

    async def model_calls(self, session_id: int) -> list[ModelCallRecord]:
        return await self._call("model_calls", ops.model_calls, session_id)

    async def get_case(self, case_id: int) -> Case | None:
        found = await self._call("get_case", ops.select_cases, "c.id = ?", (case_id,), 1)
        return found[0] if found else None

    async def cases(
        self, *, session_id: int | None = None, status: CaseStatus | None = None, limit: int = 100
    ) -> list[Case]:
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if session_id is not None:
            where.append("c.session_id = ?")
            args.append(session_id)
        if status is not None:
            where.append("c.status = ?")
            args.append(status)
        return await self._call("cases", ops.select_cases, " AND ".join(where), tuple(args), limit)

    async def case_actions(self, case_id: int) -> list[CaseAction]:
        return await self._call("case_actions", ops.case_actions, case_id)

    async def set_case_card(self, case_id: int, card: str) -> None:
        await self._call("set_case_card", ops.write, ops.set_case_card, case_id, card)

    async def moderate(
        self,
        case_id: int,
        action: str,
        actor: str,
        *,
        expect: tuple[CaseStatus, ...],
        status: CaseStatus | None = None,
        taken_over_by: str | Literal[False] | None = False,
        items: Sequence[Item] = (),
        active_agent: str | None = None,
        session_status: Status | None = None,
    ) -> Case | None:
        change = ops.Moderation(
            case_id,
            action,
            actor,
            expect,
            status,
            taken_over_by,
            tuple(items),
            active_agent,
            session_status,
        )
        return await self._call("moderate", ops.write, ops.moderate, change)
