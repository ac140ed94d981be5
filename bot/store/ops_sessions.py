"""Conversation operations: sessions, their transcript, usage, and the one write of a step."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from bot.engine.transcript import Item, item_from_dict, item_to_dict, speaker
from bot.store import ops_leases
from bot.store.ops_outbox import queue
from bot.store.sql import Many, Op, Row, count, row, rows, to_json
from bot.store.values import (
    CARD_POST,
    Entry,
    EventId,
    Holder,
    ModelCallRecord,
    ModelUsage,
    NewCase,
    NewSession,
    Session,
    SessionKey,
    Status,
    Step,
    StoreError,
    TurnMark,
    card_lane,
)

SESSION_COLUMNS = (
    "s.id, s.platform, s.channel, s.thread, s.workflow, s.active_agent, s.status, "
    "s.item_count, s.created_at, s.updated_at, s.model_calls, s.prompt_tokens, "
    "s.completion_tokens, s.taken_over_by"
)
_SESSIONS = f"SELECT {SESSION_COLUMNS} FROM sessions s"
_RETURNING = "RETURNING " + SESSION_COLUMNS.replace("s.", "")
_ENTRIES = "SELECT seq, created_at, kind, body FROM items WHERE session_id = ?"


def session_from_row(found: Row | None) -> Session | None:
    """A `Session` from a row of `SESSION_COLUMNS`."""
    if found is None:
        return None
    return Session(found[0], SessionKey(found[1], found[2], found[3]), *found[4:14])


def _entry(found: Row) -> Entry:
    return Entry(seq=found[0], at=found[1], item=item_from_dict(found[2], json.loads(found[3])))


def get_session(session_id: int) -> Op[Session | None]:
    return session_from_row((yield row(f"{_SESSIONS} WHERE s.id = ?", session_id)))


def find_session(key: SessionKey) -> Op[Session | None]:
    """The thread's latest session, open or closed."""
    found = yield row(
        f"{_SESSIONS} WHERE s.platform = ? AND s.channel = ? AND s.thread = ? "
        "ORDER BY s.id DESC LIMIT 1",
        key.platform,
        key.channel,
        key.thread,
    )
    return session_from_row(found)


def find_thread(thread: str, limit: int) -> Op[list[Session]]:
    """Sessions of a thread name on any platform or channel, newest first."""
    found = yield rows(f"{_SESSIONS} WHERE s.thread = ? ORDER BY s.id DESC LIMIT ?", thread, limit)
    return [session for each in found if (session := session_from_row(each)) is not None]


def list_sessions(limit: int) -> Op[list[Session]]:
    found = yield rows(f"{_SESSIONS} ORDER BY s.updated_at DESC, s.id DESC LIMIT ?", limit)
    return [session for each in found if (session := session_from_row(each)) is not None]


def open_session(new: NewSession) -> Op[Session]:
    """A new open session (the thread's unique index refuses a second open one)."""
    now = time.time()
    key = new.key
    found = yield row(
        "INSERT INTO sessions (platform, channel, thread, workflow, active_agent, created_at, "
        f"updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) {_RETURNING}",
        key.platform,
        key.channel,
        key.thread,
        new.workflow,
        new.agent,
        now,
        now,
    )
    session = session_from_row(found)
    assert session is not None
    return session


def recent(session_id: int, limit: int) -> Op[list[Entry]]:
    """The last `limit` entries, oldest first."""
    found = yield rows(f"{_ENTRIES} ORDER BY seq DESC LIMIT ?", session_id, limit)
    return [_entry(each) for each in reversed(found)]


def first_user_entry(session_id: int) -> Op[Entry | None]:
    found = yield row(f"{_ENTRIES} AND kind = 'user' ORDER BY seq LIMIT 1", session_id)
    return None if found is None else _entry(found)


def entries(session_id: int) -> Op[list[Entry]]:
    return [_entry(each) for each in (yield rows(f"{_ENTRIES} ORDER BY seq", session_id))]


def model_calls(session_id: int) -> Op[list[ModelCallRecord]]:
    found = yield rows(
        "SELECT seq, created_at, agent, model, prompt_tokens, completion_tokens FROM model_calls "
        "WHERE session_id = ? ORDER BY seq",
        session_id,
    )
    return [ModelCallRecord(each[0], each[1], ModelUsage(*each[2:6])) for each in found]


def claim_event(event: EventId, session_id: int | None) -> Op[bool]:
    """Claim an inbound event; False if it was claimed before."""
    claimed = yield count(
        "INSERT INTO inbound_events (platform, event_id, session_id, received_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        event.platform,
        event.id,
        session_id,
        time.time(),
    )
    return bool(claimed)


def seen_event(event: EventId) -> Op[bool]:
    found = yield row(
        "SELECT 1 FROM inbound_events WHERE platform = ? AND event_id = ?", event.platform, event.id
    )
    return found is not None


def commit(step: Step, origin: str | None = None) -> Op[Session | None]:
    """Apply one `Step` (see its docstring); None, changing nothing, for a claimed event."""
    yield from ops_leases.check(step.fence)
    if step.event is not None and not (yield from claim_event(step.event, step.session_id)):
        return None
    session: Session | None = None
    if step.opens is not None:
        session = yield from open_session(step.opens)
    if session is not None or step.session_id is not None:
        session_id = session.id if session is not None else step.session_id
        assert session_id is not None
        session = yield from append(
            session_id, step.items, step.agent, step.status, step.holder, step.usage
        )
    if session is not None:
        for case in step.cases:
            yield from open_case(session, case, origin)
    if step.result is not None:
        case_id, result = step.result
        yield count(
            "UPDATE cases SET result = ? WHERE id = ? AND result IS NULL",
            to_json({"content": result.content, "is_error": result.is_error}),
            case_id,
        )
    if step.turn is not None:
        yield from mark_turn(step.turn, session, len(step.items))
    key = session.key if session is not None else step.key
    if step.posts:
        if key is None:
            raise StoreError("a step queues posts but names no thread")
        turn = step.turn.row if step.turn is not None else None
        session_id = session.id if session is not None else None
        yield from queue(key, session_id, turn, origin, step.posts)
    return session


def open_case(session: Session, case: NewCase, origin: str | None) -> Op[None]:
    """Open a case and queue its card in a lane of its own."""
    now = time.time()
    call = case.call
    opened = yield row(
        "INSERT INTO cases (session_id, agent, reason, kind, call, opened_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        session.id,
        case.agent,
        case.reason,
        case.kind if call is None else "approval",
        None if call is None else to_json(dataclasses.asdict(call)),
        now,
        now,
    )
    lane = card_lane(session.key.platform, int(opened[0]))
    yield from queue(lane, session.id, None, origin, ({**CARD_POST, "case": opened[0]},))


def mark_turn(turn: TurnMark, session: Session | None, appended: int) -> Op[None]:
    """Where the message's turn begins (its item's position), and whether it is done."""
    if turn.started and session is not None:
        yield count(
            "UPDATE inbox SET session_id = ?, seq = ? WHERE id = ?",
            session.id,
            session.item_count - appended + 1,
            turn.row,
        )
    if turn.done:
        yield count("UPDATE inbox SET done_at = ? WHERE id = ?", time.time(), turn.row)


def append(
    session_id: int,
    items: Sequence[Item],
    agent: str | None = None,
    status: Status | None = None,
    holder: Holder | None = None,
    usage: ModelUsage | None = None,
) -> Op[Session]:
    """Append items after the session's last one and update the session, in the caller's write."""
    now = time.time()
    calls, prompt, completion = (
        (1, usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0, 0)
    )
    holder_sql = ", taken_over_by = ?" if holder is not None else ""
    holder_args: tuple[Any, ...] = (holder.moderator,) if holder is not None else ()
    found = yield row(
        "UPDATE sessions SET item_count = item_count + ?, "
        "active_agent = coalesce(?, active_agent), status = coalesce(?, status), "
        "model_calls = model_calls + ?, prompt_tokens = prompt_tokens + ?, "
        f"completion_tokens = completion_tokens + ?, updated_at = ?{holder_sql} WHERE id = ? "
        f"{_RETURNING}",
        len(items),
        agent,
        status,
        calls,
        prompt,
        completion,
        now,
        *holder_args,
        session_id,
    )
    session = session_from_row(found)
    if session is None:
        raise StoreError(f"append failed: no session {session_id}")
    first = session.item_count - len(items) + 1
    if items:
        yield Many(
            "INSERT INTO items (session_id, seq, kind, agent, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (session_id, first + i, item.kind, speaker(item), to_json(item_to_dict(item)), now)
                for i, item in enumerate(items)
            ],
        )
    if usage is not None:
        yield count(
            "INSERT INTO model_calls (session_id, seq, agent, model, prompt_tokens, "
            "completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            session_id,
            first,
            usage.agent,
            usage.model,
            prompt,
            completion,
            now,
        )
    return session
