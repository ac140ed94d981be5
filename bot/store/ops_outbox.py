"""Outbox operations: posts the bot owes a thread, queued with their step, sent in order.

A post is marked sent, with the platform's reference, as soon as the platform accepts it. A post
that replaces its turn's placeholder consumes it (the placeholder's reference is cleared).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from bot.store import ops_leases
from bot.store.sql import Many, Op, count, row, rows, to_json
from bot.store.values import Fence, Outgoing, SessionKey

_SELECT = (
    "SELECT o.id, o.platform, o.channel, o.thread, o.body, o.session_id, o.turn, o.kind, "
    "o.origin, o.attempts, o.next_attempt_at, (SELECT w.ref FROM outbox w WHERE w.turn = o.turn "
    "AND w.kind = 'working' AND w.sent_at IS NOT NULL AND o.kind <> 'working') "
    "FROM outbox o WHERE o.sent_at IS NULL"
)
_THREAD = "o.platform = ? AND o.channel = ? AND o.thread = ?"


def queue(
    key: SessionKey,
    session_id: int | None,
    turn: int | None,
    origin: str | None,
    posts: Sequence[dict[str, Any]],
) -> Op[None]:
    """Queue posts behind the thread's unsent ones, in the caller's write."""
    if posts:
        now = time.time()
        yield Many(
            "INSERT INTO outbox (platform, channel, thread, session_id, turn, kind, body, origin, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (*_key(key), session_id, turn, post["kind"], to_json(post), origin, now, now)
                for post in posts
            ],
        )


def pending(key: SessionKey, limit: int = 50) -> Op[list[Outgoing]]:
    """The thread's unsent posts, oldest first."""
    found = yield rows(f"{_SELECT} AND {_THREAD} ORDER BY o.id LIMIT ?", *_key(key), limit)
    return [_outgoing(each) for each in found]


def mark_sent(post: Outgoing, ref: str | None, fence: Fence | None) -> Op[None]:
    """The platform accepted the post (`ref` names what it created)."""
    yield from ops_leases.check(fence)
    yield count(
        "UPDATE outbox SET sent_at = ?, ref = ?, error = NULL WHERE id = ?",
        time.time(),
        ref,
        post.id,
    )
    if post.placeholder is not None:
        yield count("UPDATE outbox SET ref = NULL WHERE turn = ? AND kind = 'working'", post.turn)


def mark_failed(post: Outgoing, error: str, retry_at: float, fence: Fence | None) -> Op[None]:
    """A delivery failed: count it, and say when to try again."""
    yield from ops_leases.check(fence)
    yield count(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, next_attempt_at = ? WHERE id = ?",
        error[:500],
        retry_at,
        post.id,
    )


def due_threads(platform: str, now: float, limit: int) -> Op[list[SessionKey]]:
    """Threads of a platform whose oldest unsent post is due (a later one waits behind it)."""
    found = yield rows(
        "SELECT o.platform, o.channel, o.thread FROM outbox o "
        "WHERE o.sent_at IS NULL AND o.platform = ? AND o.next_attempt_at <= ? "
        "AND o.id = (SELECT min(x.id) FROM outbox x WHERE x.platform = o.platform "
        "AND x.channel = o.channel AND x.thread = o.thread AND x.sent_at IS NULL) LIMIT ?",
        platform,
        now,
        limit,
    )
    return [SessionKey(*each) for each in found]


def has_unsent(key: SessionKey) -> Op[bool]:
    found = yield row(f"SELECT 1 FROM outbox o WHERE o.sent_at IS NULL AND {_THREAD}", *_key(key))
    return found is not None


def unsent(session_id: int) -> Op[list[Outgoing]]:
    """A session's unsent posts, oldest first (for tests and diagnostics)."""
    found = yield rows(f"{_SELECT} AND o.session_id = ? ORDER BY o.id LIMIT 1000", session_id)
    return [_outgoing(each) for each in found]


def count_unsent() -> Op[int]:
    found = yield row("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    return int(found[0]) if found else 0


def last_ref(key: SessionKey) -> Op[str | None]:
    """The platform reference of the thread's newest post marked sent."""
    found = yield row(
        f"SELECT o.ref FROM outbox o WHERE {_THREAD} AND o.sent_at IS NOT NULL "
        "AND o.ref IS NOT NULL ORDER BY o.id DESC LIMIT 1",
        *_key(key),
    )
    return None if found is None else str(found[0])


def _key(key: SessionKey) -> tuple[str, str, str]:
    return (key.platform, key.channel, key.thread)


def _outgoing(found: Any) -> Outgoing:
    key = SessionKey(found[1], found[2], found[3])
    return Outgoing(found[0], key, json.loads(found[4]), *found[5:12])
