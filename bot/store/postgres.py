"""`PostgresStore`: the same store on PostgreSQL (asyncpg), for several bot processes.

Chosen by `BOT_DATABASE=postgresql://...`. Every operation is one transaction on a pooled
connection; inbound-event claims, the outbox and cases are shared through the database, so a
retry delivered to another process is still answered once. A thread's turns run in one process
at a time by holding a lease row (`thread_lock`), which needs no connection held for the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Literal, TypeVar

import asyncpg  # type: ignore[import-untyped]

from bot.engine.transcript import (
    Item,
    ModeratorMessage,
    UserTurn,
    item_from_dict,
    item_to_dict,
    speaker,
)
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
Conn = Any  # asyncpg.Connection, untyped
LEASE_S = 120.0
EVENT_RETENTION_S = 7 * 24 * 3600
_SESSION = (
    "id, platform, channel, thread, workflow, active_agent, status, item_count, created_at, "
    "updated_at, model_calls, prompt_tokens, completion_tokens, taken_over_by"
)
_CASE = (
    "c.id, c.session_id, s.platform, s.channel, s.thread, c.agent, c.reason, c.status, "
    "c.moderator, c.card, c.opened_at, c.updated_at"
)
_VERSION = re.compile(r"^-- version (\d+)\s*$", re.MULTILINE)


def migrations() -> list[tuple[int, str]]:
    text = resources.files("bot.store").joinpath("schema_postgres.sql").read_text("utf-8")
    parts = _VERSION.split(text)
    return [(int(parts[i]), parts[i + 1]) for i in range(1, len(parts), 2)]


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
            await self._tx("migrate", _migrate)
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
        while not await self._tx("thread_lock", _take_lease, name, self.owner):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await self._tx("thread_unlock", _drop_lease, name, self.owner)

    async def schema_version(self) -> int:
        return await self._tx("schema_version", _version)

    async def find_session(self, key: SessionKey) -> Session | None:
        return await self._tx("find_session", _find, key)

    async def get_session(self, session_id: int) -> Session | None:
        return await self._tx("get_session", _one, "id = $1", session_id)

    async def find_thread(self, thread: str) -> Session | None:
        return await self._tx("find_thread", _one, "thread = $1", thread)

    async def open_session(self, key: SessionKey, workflow: str, agent: str) -> Session:
        return await self._tx("open_session", _open, key, workflow, agent)

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
                    "receive", _receive, key, item, event, workflow, start_agent, may_open
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
            _append,
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
        return await self._tx("seen_event", _seen, platform, event_id)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        status = await self._tx(
            "claim_event",
            _exec_status,
            "INSERT INTO inbound_events (platform, event_id, received_at) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            platform,
            event_id,
            time.time(),
        )
        return bool(status.endswith(" 1"))

    async def recent(self, session_id: int, limit: int) -> list[Entry]:
        return await self._tx("recent", _recent, session_id, limit)

    async def first_user_entry(self, session_id: int) -> Entry | None:
        return await self._tx("first_user_entry", _first_user, session_id)

    async def entries(self, session_id: int) -> list[Entry]:
        return await self._tx("entries", _entries, session_id)

    async def list_sessions(self, limit: int = 50) -> list[Session]:
        return await self._tx("list_sessions", _list, limit)

    async def model_calls(self, session_id: int) -> list[ModelCallRecord]:
        return await self._tx("model_calls", _model_calls, session_id)

    async def get_case(self, case_id: int) -> Case | None:
        found = await self._tx("get_case", _cases, "c.id = $1", (case_id,), 1)
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
        return await self._tx("cases", _cases, " AND ".join(where), tuple(args), limit)

    async def case_actions(self, case_id: int) -> list[CaseAction]:
        rows = await self._tx(
            "case_actions",
            _fetch,
            "SELECT action, actor, at FROM case_actions WHERE case_id = $1 ORDER BY seq",
            case_id,
        )
        return [CaseAction(*row) for row in rows]

    async def set_case_card(self, case_id: int, card: str) -> None:
        await self._tx(
            "set_case_card", _exec, "UPDATE cases SET card = $1 WHERE id = $2", card, case_id
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
            _moderate,
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
        return await self._tx("unsent", _outgoing, "o.session_id = $1", session_id)

    async def due(self, now: float, limit: int = 100) -> list[Outgoing]:
        return await self._tx("due", _outgoing, "o.next_attempt_at <= $1", now, limit)

    async def mark_sent(self, session_id: int, count: int) -> None:
        if count:
            await self._tx("mark_sent", _mark_sent, session_id, count)

    async def mark_failed(self, session_id: int, error: str, retry_at: float) -> None:
        await self._tx(
            "mark_failed",
            _exec,
            "UPDATE outbox SET attempts = attempts + 1, error = $1, next_attempt_at = $2 "
            "WHERE id = (SELECT id FROM outbox WHERE session_id = $3 AND sent_at IS NULL "
            "ORDER BY id LIMIT 1)",
            error[:500],
            retry_at,
            session_id,
        )


# Everything below runs inside one transaction.


async def _migrate(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('switchboard-migrate'))")
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "applied_at DOUBLE PRECISION NOT NULL)"
    )
    current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    known = migrations()
    if current > known[-1][0]:
        raise StoreError(
            f"the database has schema version {current}, newer than this program's "
            f"{known[-1][0]}; upgrade Switchboard"
        )
    for version, script in known:
        if version > current:
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time()
            )
            log.info("postgres schema migrated to version %d", version)
    await conn.execute(
        "DELETE FROM inbound_events WHERE received_at < $1", time.time() - EVENT_RETENTION_S
    )


async def _version(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def _take_lease(conn: Conn, name: str, owner: str) -> bool:
    now = time.time()
    holder = await conn.fetchval(
        "INSERT INTO thread_leases (thread_key, owner, expires_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (thread_key) DO UPDATE SET owner = excluded.owner, "
        "expires_at = excluded.expires_at WHERE thread_leases.expires_at < $4 "
        "RETURNING owner",
        name,
        owner,
        now + LEASE_S,
        now,
    )
    return bool(holder == owner)


async def _drop_lease(conn: Conn, name: str, owner: str) -> None:
    await conn.execute(
        "DELETE FROM thread_leases WHERE thread_key = $1 AND owner = $2", name, owner
    )


async def _fetch(conn: Conn, sql: str, *args: Any) -> list[Any]:
    return list(await conn.fetch(sql, *args))


async def _exec(conn: Conn, sql: str, *args: Any) -> None:
    await conn.execute(sql, *args)


async def _exec_status(conn: Conn, sql: str, *args: Any) -> str:
    return str(await conn.execute(sql, *args))


async def _one(conn: Conn, where: str, *args: Any) -> Session | None:
    row = await conn.fetchrow(
        f"SELECT {_SESSION} FROM sessions WHERE {where} ORDER BY id DESC LIMIT 1", *args
    )
    return _session(row)


async def _find(conn: Conn, key: SessionKey) -> Session | None:
    return await _one(
        conn,
        "platform = $1 AND channel = $2 AND thread = $3",
        key.platform,
        key.channel,
        key.thread,
    )


async def _open(conn: Conn, key: SessionKey, workflow: str, agent: str) -> Session:
    now = time.time()
    row = await conn.fetchrow(
        "INSERT INTO sessions (platform, channel, thread, workflow, active_agent, created_at, "
        f"updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {_SESSION}",
        key.platform,
        key.channel,
        key.thread,
        workflow,
        agent,
        now,
    )
    session = _session(row)
    assert session is not None
    return session


async def _seen(conn: Conn, platform: str, event_id: str) -> bool:
    row = await conn.fetchrow(
        "SELECT 1 FROM inbound_events WHERE platform = $1 AND event_id = $2", platform, event_id
    )
    return row is not None


async def _receive(
    conn: Conn,
    key: SessionKey,
    item: Item,
    event: tuple[str, str] | None,
    workflow: str,
    start_agent: str,
    may_open: bool,
) -> Received:
    if event is not None and await _seen(conn, *event):
        return Received(None, "duplicate")
    session = await _find(conn, key)
    if session is None or session.status == "closed":
        if not may_open:
            return Received(session, "ignored")
        session = await _open(conn, key, workflow, start_agent)
    if isinstance(item, UserTurn) and session.taken_over_by == item.author:
        item = ModeratorMessage(item.author, item.text)
    stored = await _append(conn, session.id, [item], None, None, event, None, None, (), 0)
    if stored is None:
        return Received(None, "duplicate")
    backlog = await conn.fetchrow(
        "SELECT 1 FROM outbox WHERE session_id = $1 AND sent_at IS NULL LIMIT 1", session.id
    )
    return Received(stored, "stored", backlog is not None)


async def _append(
    conn: Conn,
    session_id: int,
    items: Sequence[Item],
    active_agent: str | None,
    status: Status | None,
    event: tuple[str, str] | None,
    usage: ModelUsage | None,
    open_case: tuple[str, str | None] | None,
    posts: tuple[dict[str, Any], ...],
    delivered: int,
) -> Session | None:
    now = time.time()
    if event is not None:
        claimed = await conn.execute(
            "INSERT INTO inbound_events (platform, event_id, session_id, received_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            event[0],
            event[1],
            session_id,
            now,
        )
        if claimed.endswith(" 0"):
            return None
    calls, prompt, completion = (
        (1, usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0, 0)
    )
    row = await conn.fetchrow(
        "UPDATE sessions SET item_count = item_count + $1, "
        "active_agent = coalesce($2, active_agent), status = coalesce($3, status), "
        "model_calls = model_calls + $4, prompt_tokens = prompt_tokens + $5, "
        f"completion_tokens = completion_tokens + $6, updated_at = $7 WHERE id = $8 "
        f"RETURNING {_SESSION}",
        len(items),
        active_agent,
        status,
        calls,
        prompt,
        completion,
        now,
        session_id,
    )
    session = _session(row)
    if session is None:
        raise StoreError(f"append failed: no session {session_id}")
    first = session.item_count - len(items) + 1
    if items:
        await conn.executemany(
            "INSERT INTO items (session_id, seq, kind, agent, body, created_at) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
            [
                (
                    session_id,
                    first + i,
                    item.kind,
                    speaker(item),
                    json.dumps(item_to_dict(item), ensure_ascii=False),
                    now,
                )
                for i, item in enumerate(items)
            ],
        )
    if usage is not None:
        await conn.execute(
            "INSERT INTO model_calls VALUES ($1, $2, $3, $4, $5, $6, $7)",
            session_id,
            first,
            usage.agent,
            usage.model,
            prompt,
            completion,
            now,
        )
    if open_case is not None:
        await conn.execute(
            "INSERT INTO cases (session_id, agent, reason, opened_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $4)",
            session_id,
            open_case[0],
            open_case[1],
            now,
        )
    await _mark_sent(conn, session_id, delivered)
    if posts:
        await conn.executemany(
            "INSERT INTO outbox (session_id, body, next_attempt_at, created_at) "
            "VALUES ($1, $2::jsonb, $3, $3)",
            [(session_id, json.dumps(post, ensure_ascii=False), now) for post in posts],
        )
    return session


async def _mark_sent(conn: Conn, session_id: int, count: int) -> None:
    if count:
        await conn.execute(
            "UPDATE outbox SET sent_at = $1, error = NULL WHERE id IN (SELECT id FROM outbox "
            "WHERE session_id = $2 AND sent_at IS NULL ORDER BY id LIMIT $3)",
            time.time(),
            session_id,
            count,
        )


async def _recent(conn: Conn, session_id: int, limit: int) -> list[Entry]:
    rows = await conn.fetch(
        "SELECT seq, created_at, kind, body FROM items WHERE session_id = $1 "
        "ORDER BY seq DESC LIMIT $2",
        session_id,
        limit,
    )
    return [_entry(row) for row in reversed(rows)]


async def _first_user(conn: Conn, session_id: int) -> Entry | None:
    row = await conn.fetchrow(
        "SELECT seq, created_at, kind, body FROM items WHERE session_id = $1 AND kind = 'user' "
        "ORDER BY seq LIMIT 1",
        session_id,
    )
    return None if row is None else _entry(row)


async def _entries(conn: Conn, session_id: int) -> list[Entry]:
    rows = await conn.fetch(
        "SELECT seq, created_at, kind, body FROM items WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    return [_entry(row) for row in rows]


async def _list(conn: Conn, limit: int) -> list[Session]:
    rows = await conn.fetch(
        f"SELECT {_SESSION} FROM sessions ORDER BY updated_at DESC, id DESC LIMIT $1", limit
    )
    return [session for row in rows if (session := _session(row)) is not None]


async def _model_calls(conn: Conn, session_id: int) -> list[ModelCallRecord]:
    rows = await conn.fetch(
        "SELECT seq, created_at, agent, model, prompt_tokens, completion_tokens FROM model_calls "
        "WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    return [ModelCallRecord(row[0], row[1], ModelUsage(*row[2:])) for row in rows]


async def _cases(conn: Conn, where: str, args: tuple[Any, ...], limit: int) -> list[Case]:
    rows = await conn.fetch(
        f"SELECT {_CASE} FROM cases c JOIN sessions s ON s.id = c.session_id WHERE {where} "
        f"ORDER BY c.id DESC LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [Case(row[0], row[1], SessionKey(row[2], row[3], row[4]), *row[5:]) for row in rows]


async def _moderate(
    conn: Conn,
    case_id: int,
    action: str,
    actor: str,
    expect: tuple[CaseStatus, ...],
    status: CaseStatus | None,
    taken_over_by: str | Literal[False] | None,
    items: tuple[Item, ...],
    active_agent: str | None,
    session_status: Status | None,
) -> Case | None:
    found = await conn.fetchrow(
        "SELECT status, session_id FROM cases WHERE id = $1 FOR UPDATE", case_id
    )
    if found is None or found["status"] not in expect:
        return None
    now = time.time()
    await conn.execute(
        "UPDATE cases SET status = coalesce($1, status), moderator = $2, updated_at = $3 "
        "WHERE id = $4",
        status,
        actor,
        now,
        case_id,
    )
    await conn.execute(
        "INSERT INTO case_actions SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4 "
        "FROM case_actions WHERE case_id = $1",
        case_id,
        action,
        actor,
        now,
    )
    if taken_over_by is not False:
        await conn.execute(
            "UPDATE sessions SET taken_over_by = $1 WHERE id = $2",
            taken_over_by,
            found["session_id"],
        )
    await _append(
        conn, found["session_id"], items, active_agent, session_status, None, None, None, (), 0
    )
    return (await _cases(conn, "c.id = $1", (case_id,), 1))[0]


async def _outgoing(conn: Conn, where: str, arg: Any, limit: int = 1000) -> list[Outgoing]:
    rows = await conn.fetch(
        "SELECT o.id, o.session_id, s.platform, s.channel, s.thread, o.body, o.attempts, "
        "o.next_attempt_at FROM outbox o JOIN sessions s ON s.id = o.session_id "
        f"WHERE o.sent_at IS NULL AND {where} ORDER BY o.id LIMIT $2",
        arg,
        limit,
    )
    return [
        Outgoing(
            row[0], row[1], SessionKey(row[2], row[3], row[4]), json.loads(row[5]), row[6], row[7]
        )
        for row in rows
    ]


def _session(row: Any) -> Session | None:
    if row is None:
        return None
    return Session(row[0], SessionKey(row[1], row[2], row[3]), *row[4:])


def _entry(row: Any) -> Entry:
    return Entry(seq=row[0], at=row[1], item=item_from_dict(row[2], json.loads(row[3])))
