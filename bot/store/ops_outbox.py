"""Outbox operations: posts the bot owes a thread, queued with their step, delivered in order."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from bot.store.sql import Many, Op, count, row, rows, to_json
from bot.store.values import Outgoing, SessionKey

_SELECT = (
    "SELECT o.id, o.session_id, s.platform, s.channel, s.thread, o.body, o.attempts, "
    "o.next_attempt_at FROM outbox o JOIN sessions s ON s.id = o.session_id "
    "WHERE o.sent_at IS NULL"
)
_OLDEST = "SELECT id FROM outbox WHERE session_id = ? AND sent_at IS NULL ORDER BY id"


def queue(session_id: int, posts: Sequence[dict[str, Any]]) -> Op[None]:
    """Queue posts behind the thread's unsent ones, in the caller's write."""
    if posts:
        now = time.time()
        yield Many(
            "INSERT INTO outbox (session_id, body, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?)",
            [(session_id, to_json(post), now, now) for post in posts],
        )


def mark_sent(session_id: int, number: int) -> Op[None]:
    """Record delivery of the session's `number` oldest unsent posts."""
    if number:
        yield count(
            f"UPDATE outbox SET sent_at = ?, error = NULL WHERE id IN ({_OLDEST} LIMIT ?)",
            time.time(),
            session_id,
            number,
        )


def mark_failed(session_id: int, error: str, retry_at: float) -> Op[None]:
    """Record a failed delivery of the session's oldest unsent post, and when to retry it."""
    yield count(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, next_attempt_at = ? "
        f"WHERE id = ({_OLDEST} LIMIT 1)",
        error[:500],
        retry_at,
        session_id,
    )


def unsent(session_id: int) -> Op[list[Outgoing]]:
    found = yield rows(f"{_SELECT} AND o.session_id = ? ORDER BY o.id LIMIT 1000", session_id)
    return [_outgoing(each) for each in found]


def due(now: float, limit: int) -> Op[list[Outgoing]]:
    found = yield rows(f"{_SELECT} AND o.next_attempt_at <= ? ORDER BY o.id LIMIT ?", now, limit)
    return [_outgoing(each) for each in found]


def has_unsent(session_id: int) -> Op[bool]:
    return (yield row(f"{_OLDEST} LIMIT 1", session_id)) is not None


def _outgoing(found: Any) -> Outgoing:
    key = SessionKey(found[2], found[3], found[4])
    return Outgoing(found[0], found[1], key, json.loads(found[5]), found[6], found[7])
