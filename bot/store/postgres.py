"""`PostgresStore`: the same store on PostgreSQL (asyncpg), for several bot processes.

Chosen by `BOT_DATABASE=postgresql://...`. Every operation is one transaction on a pooled
connection; inbound-event claims, the outbox and cases are shared through the database, so a
retry delivered to another process is still answered once. A thread's turns run in one process
at a time by holding a lease row (`thread_lock`), which needs no connection held for the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import asyncpg  # type: ignore[import-untyped]

from bot.engine.transcript import (
    Item,
)
from bot.store import postgres_ops as ops
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
Conn = ops.Conn


class PostgresStore:
    """A `SessionStore` in a PostgreSQL database shared by every bot process."""

    def __init__(self, dsn: str, *, schema: str | None = None, max_size: int = 20) -> None:
        self.dsn = dsn
        self.schema = schema
        self.max_size = max_size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._pool: Any = None

    @property
    def path(self) -> str:
        """Where the data lives, without credentials (for messages and logs)."""
        return re.sub(r"//[^@/]*@", "//", self.dsn)

    async def open(self) -> None:
        settings = {"search_path": self.schema} if self.schema else {}
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.max_size, server_settings=settings
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        try:
            await self._tx("migrate", ops.migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _tx(self, what: str, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `work(connection, *args)` in one transaction; translate database errors."""
        if self._pool is None:
            raise StoreError("the store is not open; call open() first")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await work(conn, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"{what} failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One transaction on a pooled connection, for bulk work such as `bot migrate`."""
        if self._pool is None:
            raise StoreError("the store is not open; call open() first")
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def thread_lock(self, key: SessionKey) -> AsyncIterator[None]:
        """Hold the thread's lease for the turn; wait (polling) while another process has it."""
        name, delay = str(key), 0.005
        while not await self._tx("thread_lock", ops.take_lease, name, self.owner):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await self._tx("thread_unlock", ops.drop_lease, name, self.owner)

    async def schema_version(self) -> int:
        return await self._tx("schema_version", ops.version)

    async def find_session(self, key: SessionKey) -> Session | None:
        return await self._tx("find_session", ops.find_session, key)

    async def get_session(self, session_id: int) -> Session | None:
        return await self._tx("get_session", ops.one_session, "id = $1", session_id)

    async def find_thread(self, thread: str) -> Session | None:
        return await self._tx("find_thread", ops.one_session, "thread = $1", thread)

    async def open_session(self, key: SessionKey, workflow: str, agent: str) -> Session:
        return await self._tx("open_session", ops.open_session, key, workflow, agent)

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
        for attempt in range(3):
            try:
                return await self._tx(
                    "receive", ops.receive, key, item, event, workflow, start_agent, may_open
                )
            except StoreError as exc:
                # Two processes opened the thread's first session at once: read it again.
                if attempt == 2 or not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                    raise
        raise AssertionError("unreachable")

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
        return await self._tx(
            "append",
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

    async def seen_event(self, platform: str, event_id: str) -> bool:
        return await self._tx("seen_event", ops.seen_event, platform, event_id)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        status = await self._tx(
            "claim_event",
            ops.execute_status,
            "INSERT INTO inbound_events (platform, event_id, received_at) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            platform,
            event_id,
            time.time(),
        )
        return bool(status.endswith(" 1"))

    async def recent(self, session_id: int, limit: int) -> list[Entry]:
        return await self._tx("recent", ops.recent_entries, session_id, limit)

    async def first_user_entry(self, session_id: int) -> Entry | None:
        return await self._tx("first_user_entry", ops.first_user_entry, session_id)

    async def entries(self, session_id: int) -> list[Entry]:
        return await self._tx("entries", ops.all_entries, session_id)

    async def list_sessions(self, limit: int = 50) -> list[Session]:
        return await self._tx("list_sessions", ops.list_sessions, limit)

    async def model_calls(self, session_id: int) -> list[ModelCallRecord]:
        return await self._tx("model_calls", ops.model_calls, session_id)

    async def get_case(self, case_id: int) -> Case | None:
        found = await self._tx("get_case", ops.select_cases, "c.id = $1", (case_id,), 1)
        return found[0] if found else None

    async def cases(
        self, *, session_id: int | None = None, status: CaseStatus | None = None, limit: int = 100
    ) -> list[Case]:
        where: list[str] = ["TRUE"]
        args: list[Any] = []
        if session_id is not None:
            args.append(session_id)
            where.append(f"c.session_id = ${len(args)}")
        if status is not None:
            args.append(status)
            where.append(f"c.status = ${len(args)}")
        return await self._tx("cases", ops.select_cases, " AND ".join(where), tuple(args), limit)

    async def case_actions(self, case_id: int) -> list[CaseAction]:
        rows = await self._tx(
            "case_actions",
            ops.fetch,
            "SELECT action, actor, at FROM case_actions WHERE case_id = $1 ORDER BY seq",
            case_id,
        )
        return [CaseAction(*row) for row in rows]

    async def set_case_card(self, case_id: int, card: str) -> None:
        await self._tx(
            "set_case_card", ops.execute, "UPDATE cases SET card = $1 WHERE id = $2", card, case_id
        )

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
        return await self._tx(
            "moderate",
            ops.moderate,
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

    async def unsent(self, session_id: int) -> list[Outgoing]:
        return await self._tx("unsent", ops.select_outgoing, "o.session_id = $1", session_id)

    async def due(self, now: float, limit: int = 100) -> list[Outgoing]:
        return await self._tx("due", ops.select_outgoing, "o.next_attempt_at <= $1", now, limit)

    async def mark_sent(self, session_id: int, count: int) -> None:
        if count:
            await self._tx("mark_sent", ops.mark_sent, session_id, count)

    async def mark_failed(self, session_id: int, error: str, retry_at: float) -> None:
        await self._tx(
            "mark_failed",
            ops.execute,
            "UPDATE outbox SET attempts = attempts + 1, error = $1, next_attempt_at = $2 "
            "WHERE id = (SELECT id FROM outbox WHERE session_id = $3 AND sent_at IS NULL "
            "ORDER BY id LIMIT 1)",
            error[:500],
            retry_at,
            session_id,
        )
