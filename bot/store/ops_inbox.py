"""Inbox operations: inbound messages stored before they are acknowledged, and owed a turn.

`receive` claims the event and stores the message in one short write, so a platform is told it
arrived only once it is durable; a retry finds the claim (and whether its turn is still owed).
A thread's turns take its owed messages in the platform's order; `admit` starts one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bot.store import ops_leases
from bot.store.ops_sessions import claim_event, commit, find_session, seen_event
from bot.store.sql import Op, count, row, rows
from bot.store.values import (
    Admitted,
    EventId,
    Fence,
    Inbound,
    InboxRow,
    Received,
    Session,
    SessionKey,
    V,
)

_ROW = (
    "SELECT id, platform, channel, thread, event_id, author, text, mentioned, stamp, cut, "
    "received_at, session_id, seq, case_id FROM inbox"
)
_THREAD = "platform = ? AND channel = ? AND thread = ?"
_HELD = (
    "EXISTS (SELECT 1 FROM sessions WHERE platform = ? AND channel = ? AND thread = ? "
    "AND status = 'open') OR EXISTS (SELECT 1 FROM inbox WHERE platform = ? AND channel = ? "
    "AND thread = ? AND done_at IS NULL)"
)


def receive(message: Inbound, only_if_held: bool) -> Op[Received]:
    """Claim the message's event and store it, owed a turn.

    With `only_if_held`, a message is stored only in a thread that has an open conversation or
    messages still owed a turn; otherwise nothing is written (chatter in other threads).
    """
    key = message.key
    event = message.event
    if only_if_held and not (event is not None and (yield from seen_event(event))):
        held = yield row(f"SELECT {_HELD}", *_key(key), *_key(key))
        if not held or not held[0]:
            return Received(None)
    if event is not None and not (yield from claim_event(event, None)):
        owed = yield row(
            f"SELECT 1 FROM inbox WHERE {_THREAD} AND event_id = ? AND done_at IS NULL",
            *_key(key),
            event.id,
        )
        return Received(None, duplicate=True, owed=owed is not None)
    stored = yield row(
        "INSERT INTO inbox (platform, channel, thread, event_id, author, text, mentioned, stamp, "
        "cut, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        *_key(key),
        message.event.id if message.event is not None else None,
        message.author,
        message.text,
        int(message.mentioned),
        message.stamp,
        int(message.cut),
        time.time(),
    )
    return Received(int(stored[0]))


def next_owed(key: SessionKey) -> Op[InboxRow | None]:
    """The thread's next owed message: one whose turn started (and was cut short) first, then
    the one the platform stamped first."""
    found = yield row(
        f"{_ROW} WHERE {_THREAD} AND done_at IS NULL "
        "ORDER BY CASE WHEN seq IS NULL THEN 1 ELSE 0 END, stamp, id LIMIT 1",
        *_key(key),
    )
    return None if found is None else _inbox_row(found)


def owed_threads(platform: str, limit: int) -> Op[list[SessionKey]]:
    """Threads of a platform with messages owed a turn."""
    found = yield rows(
        "SELECT DISTINCT platform, channel, thread FROM inbox "
        "WHERE platform = ? AND done_at IS NULL LIMIT ?",
        platform,
        limit,
    )
    return [SessionKey(*each) for each in found]


def admit(
    message: InboxRow,
    fence: Fence | None,
    decide: Callable[[Session | None], V],
    origin: str | None = None,
) -> Op[Admitted[V]]:
    """Read the thread's session, let `decide` (the service's rules, a pure function) say what
    the message's step is, and write it, all in one transaction."""
    yield from ops_leases.check(fence)
    found = yield from find_session(message.message.key)
    verdict = decide(found)
    step = verdict.step
    if step is None:
        return Admitted(verdict, found)
    return Admitted(verdict, (yield from commit(step, origin)) or found)


def last_stamps(platform: str, since: float, limit: int) -> Op[list[tuple[SessionKey, str]]]:
    """Open conversations of a platform active since `since`, with the newest stamp stored for
    each: where to read again from after a time the bot was not listening."""
    found = yield rows(
        "SELECT s.platform, s.channel, s.thread, max(i.stamp) FROM sessions s "
        "JOIN inbox i ON i.platform = s.platform AND i.channel = s.channel AND i.thread = s.thread "
        "WHERE s.platform = ? AND s.status = 'open' AND s.updated_at >= ? "
        "GROUP BY s.platform, s.channel, s.thread LIMIT ?",
        platform,
        since,
        limit,
    )
    return [(SessionKey(each[0], each[1], each[2]), str(each[3])) for each in found]


def finish(message: InboxRow, fence: Fence | None) -> Op[None]:
    """Mark a message answered without any other write (its turn stored nothing more)."""
    yield from ops_leases.check(fence)
    yield count("UPDATE inbox SET done_at = ? WHERE id = ?", time.time(), message.id)


def _key(key: SessionKey) -> tuple[str, str, str]:
    return (key.platform, key.channel, key.thread)


def _inbox_row(found: Any) -> InboxRow:
    event = EventId(found[1], found[4]) if found[4] is not None else None
    key = SessionKey(found[1], found[2], found[3])
    message = Inbound(key, found[5], found[6], bool(found[7]), found[8], event, bool(found[9]))
    return InboxRow(found[0], message, found[10], found[11], found[12], found[13])
