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
from bot.store.values import DeadLetter, Fence, Outgoing, SessionKey

_LIVE = "o.sent_at IS NULL AND o.dead_at IS NULL"
# Each post with its turn's live placeholder: the newest "working" post shown and not replaced.
_SELECT = (
    "SELECT o.id, o.platform, o.channel, o.thread, o.body, o.session_id, o.turn, o.kind, "
    "o.origin, o.attempts, o.next_attempt_at, w.ref, o.degraded, w.body FROM outbox o "
    "LEFT JOIN outbox w ON w.id = (SELECT max(x.id) FROM outbox x "
    "WHERE x.turn = o.turn AND x.kind = 'working' AND x.sent_at IS NOT NULL "
    f"AND x.ref IS NOT NULL) WHERE {_LIVE}"
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


def placeholder(turn: int) -> Op[tuple[str, dict[str, Any]] | None]:
    """The turn's live placeholder (shown, not replaced yet): its reference and its post."""
    found = yield row(
        "SELECT ref, body FROM outbox WHERE turn = ? AND kind = 'working' AND sent_at IS NOT NULL "
        "AND ref IS NOT NULL ORDER BY id DESC LIMIT 1",
        turn,
    )
    return None if found is None else (str(found[0]), json.loads(found[1]))


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
        yield count(
            "UPDATE outbox SET ref = NULL WHERE turn = ? AND kind = 'working' AND ref = ?",
            post.turn,
            post.placeholder,
        )


def mark_failed(post: Outgoing, error: str, retry_at: float, fence: Fence | None) -> Op[None]:
    """A delivery failed for now: count it, and say when to try again."""
    yield from ops_leases.check(fence)
    yield count(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, next_attempt_at = ? WHERE id = ?",
        error[:500],
        retry_at,
        post.id,
    )


def mark_refused(post: Outgoing, error: str, fence: Fence | None) -> Op[bool]:
    """The platform refused the post for good: try it once more as plain text, then set it
    aside as a dead letter. True when it became a dead letter."""
    yield from ops_leases.check(fence)
    dead = bool(post.degraded)
    now = time.time()
    yield count(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, degraded = 1, "
        "next_attempt_at = ?, dead_at = ? WHERE id = ?",
        error[:500],
        now,
        now if dead else None,
        post.id,
    )
    return dead


def dead_letters(limit: int) -> Op[list[DeadLetter]]:
    """Posts set aside, newest first."""
    found = yield rows(
        "SELECT id, platform, channel, thread, kind, body, error, created_at, dead_at "
        "FROM outbox WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT ?",
        limit,
    )
    return [
        DeadLetter(
            each[0], SessionKey(each[1], each[2], each[3]), each[4], json.loads(each[5]), *each[6:9]
        )
        for each in found
    ]


def count_dead() -> Op[int]:
    found = yield row("SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL")
    return int(found[0]) if found else 0


def prune(before: float, batch: int = 5000) -> Op[int]:
    """Forget posts sent, claims made and messages answered before `before`; how many rows."""
    removed = 0
    for sql in (
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at < ? LIMIT ?)",
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE done_at < ? LIMIT ?)",
        "DELETE FROM inbound_events WHERE event_id IN (SELECT event_id FROM inbound_events "
        "WHERE received_at < ? LIMIT ?)",
    ):
        removed += yield count(sql, before, batch)
    return removed


def due_threads(platform: str, now: float, limit: int) -> Op[list[SessionKey]]:
    """Threads of a platform whose oldest unsent post is due (a later one waits behind it)."""
    found = yield rows(
        "SELECT o.platform, o.channel, o.thread FROM outbox o "
        f"WHERE {_LIVE} AND o.platform = ? AND o.next_attempt_at <= ? "
        "AND o.id = (SELECT min(x.id) FROM outbox x WHERE x.platform = o.platform "
        "AND x.channel = o.channel AND x.thread = o.thread AND x.sent_at IS NULL "
        "AND x.dead_at IS NULL) LIMIT ?",
        platform,
        now,
        limit,
    )
    return [SessionKey(*each) for each in found]


def has_unsent(key: SessionKey) -> Op[bool]:
    found = yield row(f"SELECT 1 FROM outbox o WHERE {_LIVE} AND {_THREAD}", *_key(key))
    return found is not None


def unsent(session_id: int) -> Op[list[Outgoing]]:
    """A session's unsent posts, oldest first (for tests and diagnostics)."""
    found = yield rows(f"{_SELECT} AND o.session_id = ? ORDER BY o.id LIMIT 1000", session_id)
    return [_outgoing(each) for each in found]


def count_unsent() -> Op[int]:
    found = yield row("SELECT count(*) FROM outbox o WHERE " + _LIVE)
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
    return Outgoing(
        found[0],
        SessionKey(found[1], found[2], found[3]),
        json.loads(found[4]),
        session_id=found[5],
        turn=found[6],
        kind=found[7],
        origin=found[8],
        attempts=found[9],
        next_attempt_at=found[10],
        placeholder=found[11],
        degraded=bool(found[12]),
        placeholder_body=json.loads(found[13]) if found[13] else None,
    )
