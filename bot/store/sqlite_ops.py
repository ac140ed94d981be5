"""The SQLite store's operations: each runs whole on the connection thread, in order.

Internal to `bot.store.sqlite`: one plain function per store operation, on a `sqlite3` connection.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeVar

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

EVENT_RETENTION_S = 7 * 24 * 3600
LOCK_RETRIES = 8
_SESSION_COLUMNS = (
    "id, platform, channel, thread, workflow, active_agent, status, item_count, "
    "created_at, updated_at, model_calls, prompt_tokens, completion_tokens, taken_over_by"
)
_CASE_COLUMNS = (
    "c.id, c.session_id, s.platform, s.channel, s.thread, c.agent, c.reason, c.status, "
    "c.moderator, c.card, c.opened_at, c.updated_at"
)
_ENTRY_COLUMNS = "seq, created_at, kind, body"
_VERSION = re.compile(r"^-- version (\d+)\s*$", re.MULTILINE)


def migrations() -> list[tuple[int, str]]:
    """The `(version, script)` blocks of schema.sql, in order."""
    text = resources.files("bot.store").joinpath("schema.sql").read_text(encoding="utf-8")
    parts = _VERSION.split(text)
    return [(int(parts[i]), parts[i + 1]) for i in range(1, len(parts), 2)]


def prepare(db: sqlite3.Connection, path: str, busy_timeout_ms: int) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    current = user_version(db)
    known = migrations()
    newest = known[-1][0]
    if current > newest:
        raise StoreError(
            f"the database {path} has schema version {current}, newer than this "
            f"program's {newest}; upgrade Switchboard or use another database file"
        )
    for version, script in known:
        if version > current:
            write(db, migrate_to, version, script)
            log.info("store %s migrated to schema version %d", path, version)
    write(db, prune_events)


def migrate_to(db: sqlite3.Connection, version: int, script: str) -> None:
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    for statement in code.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {int(version)}")


def prune_events(db: sqlite3.Connection) -> None:
    db.execute(
        "DELETE FROM inbound_events WHERE received_at < ?", (time.time() - EVENT_RETENTION_S,)
    )


def write(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    """Run `work` in one `BEGIN IMMEDIATE` transaction, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db, *args)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def one_session(db: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> Session | None:
    row = db.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {where} ORDER BY id DESC LIMIT 1", args
    ).fetchone()
    return session_from_row(row)


def find_session(db: sqlite3.Connection, key: SessionKey) -> Session | None:
    return one_session(
        db, "platform = ? AND channel = ? AND thread = ?", (key.platform, key.channel, key.thread)
    )


def open_session(db: sqlite3.Connection, key: SessionKey, workflow: str, agent: str) -> Session:
    now = time.time()
    row = db.execute(
        "INSERT INTO sessions (platform, channel, thread, workflow, active_agent, created_at, "
        f"updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_SESSION_COLUMNS}",
        (key.platform, key.channel, key.thread, workflow, agent, now, now),
    ).fetchone()
    session = session_from_row(row)
    assert session is not None
    return session


def receive(
    db: sqlite3.Connection,
    key: SessionKey,
    item: Item,
    event: tuple[str, str] | None,
    workflow: str,
    start_agent: str,
    may_open: bool,
) -> Received:
    if event is not None and seen_event(db, *event):
        return Received(None, "duplicate")
    session = find_session(db, key)
    if session is None or session.status == "closed":
        if not may_open:
            return Received(session, "ignored")
        session = open_session(db, key, workflow, start_agent)
    if isinstance(item, UserTurn) and session.taken_over_by == item.author:
        item = ModeratorMessage(item.author, item.text)  # the moderator holding the thread
    stored = append_items(db, session.id, [item], None, None, event, None, None)
    backlog = db.execute(
        "SELECT 1 FROM outbox WHERE session_id = ? AND sent_at IS NULL LIMIT 1", (session.id,)
    ).fetchone()
    return Received(stored, "stored", backlog is not None)


def append_items(
    db: sqlite3.Connection,
    session_id: int,
    items: Sequence[Item],
    active_agent: str | None,
    status: Status | None,
    event: tuple[str, str] | None,
    usage: ModelUsage | None,
    open_case: tuple[str, str | None] | None = None,
) -> Session | None:
    now = time.time()
    if event is not None:
        cursor = db.execute(
            "INSERT INTO inbound_events (platform, event_id, session_id, received_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (event[0], event[1], session_id, now),
        )
        if cursor.rowcount == 0:
            return None
    calls, prompt, completion = (
        (1, usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0, 0)
    )
    row = db.execute(
        "UPDATE sessions SET item_count = item_count + ?, "
        "active_agent = coalesce(?, active_agent), status = coalesce(?, status), "
        "model_calls = model_calls + ?, prompt_tokens = prompt_tokens + ?, "
        "completion_tokens = completion_tokens + ?, "
        f"updated_at = ? WHERE id = ? RETURNING {_SESSION_COLUMNS}",
        (len(items), active_agent, status, calls, prompt, completion, now, session_id),
    ).fetchone()
    session = session_from_row(row)
    if session is None:
        raise StoreError(f"append failed: no session {session_id}")
    first = session.item_count - len(items) + 1
    db.executemany(
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
    if usage is not None:
        db.execute(
            "INSERT INTO model_calls (session_id, seq, agent, model, prompt_tokens, "
            "completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, first, usage.agent, usage.model, prompt, completion, now),
        )
    if open_case is not None:
        db.execute(
            "INSERT INTO cases (session_id, agent, reason, opened_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, open_case[0], open_case[1], now, now),
        )
    return session


def claim_event(db: sqlite3.Connection, platform: str, event_id: str) -> bool:
    cursor = db.execute(
        "INSERT INTO inbound_events (platform, event_id, received_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (platform, event_id, time.time()),
    )
    return cursor.rowcount == 1


def seen_event(db: sqlite3.Connection, platform: str, event_id: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM inbound_events WHERE platform = ? AND event_id = ?", (platform, event_id)
    ).fetchone()
    return row is not None


def recent_entries(db: sqlite3.Connection, session_id: int, limit: int) -> list[Entry]:
    rows = db.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM items WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
        (session_id, limit),
    ).fetchall()
    return [entry_from_row(row) for row in reversed(rows)]


def first_user_entry(db: sqlite3.Connection, session_id: int) -> Entry | None:
    row = db.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM items WHERE session_id = ? AND kind = 'user' "
        "ORDER BY seq LIMIT 1",
        (session_id,),
    ).fetchone()
    return None if row is None else entry_from_row(row)


def all_entries(db: sqlite3.Connection, session_id: int) -> list[Entry]:
    rows = db.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM items WHERE session_id = ? ORDER BY seq", (session_id,)
    ).fetchall()
    return [entry_from_row(row) for row in rows]


def list_sessions(db: sqlite3.Connection, limit: int) -> list[Session]:
    rows = db.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY updated_at DESC, id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [session for row in rows if (session := session_from_row(row)) is not None]


@dataclass(frozen=True, slots=True)
class Moderation:
    case_id: int
    action: str
    actor: str
    expect: tuple[CaseStatus, ...]
    status: CaseStatus | None
    taken_over_by: str | Literal[False] | None
    items: tuple[Item, ...]
    active_agent: str | None
    session_status: Status | None


def moderate(db: sqlite3.Connection, change: Moderation) -> Case | None:
    found = select_cases(db, "c.id = ?", (change.case_id,), 1)
    if not found or found[0].status not in change.expect:
        return None
    case = found[0]
    now = time.time()
    db.execute(
        "UPDATE cases SET status = coalesce(?, status), moderator = ?, updated_at = ? WHERE id = ?",
        (change.status, change.actor, now, case.id),
    )
    seq = db.execute(
        "SELECT coalesce(max(seq), 0) + 1 FROM case_actions WHERE case_id = ?", (case.id,)
    ).fetchone()[0]
    db.execute(
        "INSERT INTO case_actions (case_id, seq, action, actor, at) VALUES (?, ?, ?, ?, ?)",
        (case.id, seq, change.action, change.actor, now),
    )
    if change.taken_over_by is not False:
        db.execute(
            "UPDATE sessions SET taken_over_by = ? WHERE id = ?",
            (change.taken_over_by, case.session_id),
        )
    append_items(
        db, case.session_id, change.items, change.active_agent, change.session_status, None, None
    )
    return select_cases(db, "c.id = ?", (case.id,), 1)[0]


def set_case_card(db: sqlite3.Connection, case_id: int, card: str) -> None:
    db.execute("UPDATE cases SET card = ? WHERE id = ?", (card, case_id))


def select_cases(
    db: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int
) -> list[Case]:
    rows = db.execute(
        f"SELECT {_CASE_COLUMNS} FROM cases c JOIN sessions s ON s.id = c.session_id "
        f"WHERE {where} ORDER BY c.id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [Case(row[0], row[1], SessionKey(row[2], row[3], row[4]), *row[5:]) for row in rows]


def case_actions(db: sqlite3.Connection, case_id: int) -> list[CaseAction]:
    rows = db.execute(
        "SELECT action, actor, at FROM case_actions WHERE case_id = ? ORDER BY seq", (case_id,)
    ).fetchall()
    return [CaseAction(*row) for row in rows]


def append_step(
    db: sqlite3.Connection,
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
    session = append_items(db, session_id, items, active_agent, status, event, usage, open_case)
    if session is None:
        return None
    mark_sent(db, session_id, delivered)
    if posts:
        now = time.time()
        db.executemany(
            "INSERT INTO outbox (session_id, body, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?)",
            [(session_id, json.dumps(post, ensure_ascii=False), now, now) for post in posts],
        )
    return session


def mark_sent(db: sqlite3.Connection, session_id: int, count: int) -> None:
    if count:
        db.execute(
            "UPDATE outbox SET sent_at = ?, error = NULL WHERE id IN (SELECT id FROM outbox "
            "WHERE session_id = ? AND sent_at IS NULL ORDER BY id LIMIT ?)",
            (time.time(), session_id, count),
        )


def mark_failed(db: sqlite3.Connection, session_id: int, error: str, retry_at: float) -> None:
    db.execute(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, next_attempt_at = ? WHERE id = "
        "(SELECT id FROM outbox WHERE session_id = ? AND sent_at IS NULL ORDER BY id LIMIT 1)",
        (error, retry_at, session_id),
    )


def select_outgoing(
    db: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int
) -> list[Outgoing]:
    rows = db.execute(
        "SELECT o.id, o.session_id, s.platform, s.channel, s.thread, o.body, o.attempts, "
        "o.next_attempt_at "
        "FROM outbox o JOIN sessions s ON s.id = o.session_id "
        f"WHERE o.sent_at IS NULL AND {where} ORDER BY o.id LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [
        Outgoing(
            row[0], row[1], SessionKey(row[2], row[3], row[4]), json.loads(row[5]), row[6], row[7]
        )
        for row in rows
    ]


def model_calls(db: sqlite3.Connection, session_id: int) -> list[ModelCallRecord]:
    rows = db.execute(
        "SELECT seq, created_at, agent, model, prompt_tokens, completion_tokens FROM model_calls "
        "WHERE session_id = ? ORDER BY seq",
        (session_id,),
    ).fetchall()
    return [ModelCallRecord(row[0], row[1], ModelUsage(*row[2:])) for row in rows]


def session_from_row(row: Any) -> Session | None:
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
        model_calls=row[10],
        prompt_tokens=row[11],
        completion_tokens=row[12],
        taken_over_by=row[13],
    )


def entry_from_row(row: Any) -> Entry:
    return Entry(seq=row[0], at=row[1], item=item_from_dict(row[2], json.loads(row[3])))
