"""The PostgreSQL store's operations: each runs inside one transaction.

Internal to `bot.store.postgres`: one coroutine per store operation, on an asyncpg connection.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

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


async def migrate(conn: Conn) -> None:
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


async def version(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def take_lease(conn: Conn, name: str, owner: str) -> bool:
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


async def drop_lease(conn: Conn, name: str, owner: str) -> None:
    await conn.execute(
        "DELETE FROM thread_leases WHERE thread_key = $1 AND owner = $2", name, owner
    )


async def fetch(conn: Conn, sql: str, *args: Any) -> list[Any]:
    return list(await conn.fetch(sql, *args))


async def execute(conn: Conn, sql: str, *args: Any) -> None:
    await conn.execute(sql, *args)


async def execute_status(conn: Conn, sql: str, *args: Any) -> str:
    return str(await conn.execute(sql, *args))


async def one_session(conn: Conn, where: str, *args: Any) -> Session | None:
    row = await conn.fetchrow(
        f"SELECT {_SESSION} FROM sessions WHERE {where} ORDER BY id DESC LIMIT 1", *args
    )
    return session_from_row(row)


async def find_session(conn: Conn, key: SessionKey) -> Session | None:
    return await one_session(
        conn,
        "platform = $1 AND channel = $2 AND thread = $3",
        key.platform,
        key.channel,
        key.thread,
    )


async def open_session(conn: Conn, key: SessionKey, workflow: str, agent: str) -> Session:
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
    session = session_from_row(row)
    assert session is not None
    return session


async def seen_event(conn: Conn, platform: str, event_id: str) -> bool:
    row = await conn.fetchrow(
        "SELECT 1 FROM inbound_events WHERE platform = $1 AND event_id = $2", platform, event_id
    )
    return row is not None


async def receive(
    conn: Conn,
    key: SessionKey,
    item: Item,
    event: tuple[str, str] | None,
    workflow: str,
    start_agent: str,
    may_open: bool,
) -> Received:
    if event is not None and await seen_event(conn, *event):
        return Received(None, "duplicate")
    session = await find_session(conn, key)
    if session is None or session.status == "closed":
        if not may_open:
            return Received(session, "ignored")
        session = await open_session(conn, key, workflow, start_agent)
    if isinstance(item, UserTurn) and session.taken_over_by == item.author:
        item = ModeratorMessage(item.author, item.text)
    stored = await append_step(conn, session.id, [item], None, None, event, None, None, (), 0)
    if stored is None:
        return Received(None, "duplicate")
    backlog = await conn.fetchrow(
        "SELECT 1 FROM outbox WHERE session_id = $1 AND sent_at IS NULL LIMIT 1", session.id
    )
    return Received(stored, "stored", backlog is not None)


async def append_step(
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
    session = session_from_row(row)
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
    await mark_sent(conn, session_id, delivered)
    if posts:
        await conn.executemany(
            "INSERT INTO outbox (session_id, body, next_attempt_at, created_at) "
            "VALUES ($1, $2::jsonb, $3, $3)",
            [(session_id, json.dumps(post, ensure_ascii=False), now) for post in posts],
        )
    return session


async def mark_sent(conn: Conn, session_id: int, count: int) -> None:
    if count:
        await conn.execute(
            "UPDATE outbox SET sent_at = $1, error = NULL WHERE id IN (SELECT id FROM outbox "
            "WHERE session_id = $2 AND sent_at IS NULL ORDER BY id LIMIT $3)",
            time.time(),
            session_id,
            count,
        )


async def recent_entries(conn: Conn, session_id: int, limit: int) -> list[Entry]:
    rows = await conn.fetch(
        "SELECT seq, created_at, kind, body FROM items WHERE session_id = $1 "
        "ORDER BY seq DESC LIMIT $2",
        session_id,
        limit,
    )
    return [entry_from_row(row) for row in reversed(rows)]


async def first_user_entry(conn: Conn, session_id: int) -> Entry | None:
    row = await conn.fetchrow(
        "SELECT seq, created_at, kind, body FROM items WHERE session_id = $1 AND kind = 'user' "
        "ORDER BY seq LIMIT 1",
        session_id,
    )
    return None if row is None else entry_from_row(row)


async def all_entries(conn: Conn, session_id: int) -> list[Entry]:
    rows = await conn.fetch(
        "SELECT seq, created_at, kind, body FROM items WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    return [entry_from_row(row) for row in rows]


async def list_sessions(conn: Conn, limit: int) -> list[Session]:
    rows = await conn.fetch(
        f"SELECT {_SESSION} FROM sessions ORDER BY updated_at DESC, id DESC LIMIT $1", limit
    )
    return [session for row in rows if (session := session_from_row(row)) is not None]


async def model_calls(conn: Conn, session_id: int) -> list[ModelCallRecord]:
    rows = await conn.fetch(
        "SELECT seq, created_at, agent, model, prompt_tokens, completion_tokens FROM model_calls "
        "WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    return [ModelCallRecord(row[0], row[1], ModelUsage(*row[2:])) for row in rows]


async def select_cases(conn: Conn, where: str, args: tuple[Any, ...], limit: int) -> list[Case]:
    rows = await conn.fetch(
        f"SELECT {_CASE} FROM cases c JOIN sessions s ON s.id = c.session_id WHERE {where} "
        f"ORDER BY c.id DESC LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [Case(row[0], row[1], SessionKey(row[2], row[3], row[4]), *row[5:]) for row in rows]


async def moderate(
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
    await append_step(
        conn, found["session_id"], items, active_agent, session_status, None, None, None, (), 0
    )
    return (await select_cases(conn, "c.id = $1", (case_id,), 1))[0]


async def select_outgoing(conn: Conn, where: str, arg: Any, limit: int = 1000) -> list[Outgoing]:
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


def session_from_row(row: Any) -> Session | None:
    if row is None:
        return None
    return Session(row[0], SessionKey(row[1], row[2], row[3]), *row[4:])


def entry_from_row(row: Any) -> Entry:
    return Entry(seq=row[0], at=row[1], item=item_from_dict(row[2], json.loads(row[3])))
