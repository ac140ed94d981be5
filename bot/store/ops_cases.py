"""Case operations: review cases, their recorded actions, and a moderator's decision."""

from __future__ import annotations

import json
import time
from typing import Any

from bot.store import ops_leases
from bot.store.ops_outbox import queue
from bot.store.ops_sessions import append
from bot.store.sql import Op, count, row, rows
from bot.store.values import (
    CARD_POST,
    CallResult,
    Case,
    CaseAction,
    CaseStatus,
    Decision,
    PendingCall,
    SessionKey,
    card_lane,
)

_SELECT = (
    "SELECT c.id, c.session_id, s.platform, s.channel, s.thread, c.agent, c.reason, c.status, "
    "c.moderator, c.card, c.opened_at, c.updated_at, c.kind, c.call, c.result "
    "FROM cases c JOIN sessions s ON s.id = c.session_id"
)


def _case(found: Any) -> Case:
    call = PendingCall(**json.loads(found[13])) if found[13] else None
    result = CallResult(**json.loads(found[14])) if found[14] else None
    key = SessionKey(found[2], found[3], found[4])
    agent, reason, status, moderator, card, opened_at, updated_at, kind = found[5:13]
    return Case(
        found[0],
        found[1],
        key,
        agent,
        reason,
        status,
        moderator,
        card,
        opened_at,
        updated_at,
        kind,
        call,
        result,
    )


def get_case(case_id: int) -> Op[Case | None]:
    found = yield row(f"{_SELECT} WHERE c.id = ?", case_id)
    return None if found is None else _case(found)


def cases(session_id: int | None, status: CaseStatus | None, limit: int) -> Op[list[Case]]:
    """Cases, newest first, optionally of one session or in one status."""
    found = yield rows(
        f"{_SELECT} WHERE c.session_id = coalesce(?, c.session_id) "
        "AND c.status = coalesce(?, c.status) ORDER BY c.id DESC LIMIT ?",
        session_id,
        status,
        limit,
    )
    return [_case(each) for each in found]


def count_cases(status: CaseStatus) -> Op[int]:
    found = yield row("SELECT count(*) FROM cases WHERE status = ?", status)
    return int(found[0]) if found else 0


def case_actions(case_id: int) -> Op[list[CaseAction]]:
    found = yield rows(
        "SELECT action, actor, at FROM case_actions WHERE case_id = ? ORDER BY seq", case_id
    )
    return [CaseAction(*each) for each in found]


def set_card(case_id: int, card: str) -> Op[None]:
    yield count("UPDATE cases SET card = ? WHERE id = ?", card, case_id)


def decide(decision: Decision, origin: str | None = None) -> Op[Case | None]:
    """Apply a moderator's decision; None, changing nothing, if the case moved on meanwhile."""
    yield from ops_leases.check(decision.fence)
    found = yield row(
        "SELECT status, session_id FROM cases WHERE id = ? FOR UPDATE", decision.case_id
    )
    if found is None or found[0] not in decision.expect:
        return None
    now = time.time()
    yield count(
        "UPDATE cases SET status = coalesce(?, status), moderator = ?, updated_at = ? WHERE id = ?",
        decision.status,
        decision.actor,
        now,
        decision.case_id,
    )
    yield count(
        "INSERT INTO case_actions (case_id, seq, action, actor, at) "
        "SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ? FROM case_actions WHERE case_id = ?",
        decision.case_id,
        decision.action,
        decision.actor,
        now,
        decision.case_id,
    )
    session = yield from append(
        found[1], decision.items, decision.agent, decision.session_status, decision.holder
    )
    yield from queue(session.key, session.id, None, origin, decision.posts)
    if decision.resume:  # the thread owes the job of finishing the call: stored with the verdict
        yield count(
            "INSERT INTO inbox (platform, channel, thread, author, text, mentioned, stamp, "
            "received_at, session_id, case_id) VALUES (?, ?, ?, ?, '', 0, ?, ?, ?, ?)",
            session.key.platform,
            session.key.channel,
            session.key.thread,
            decision.actor,
            f"{now:020.6f}",
            now,
            session.id,
            decision.case_id,
        )
    card = {**CARD_POST, "case": decision.case_id}
    yield from queue(
        card_lane(session.key.platform, decision.case_id), session.id, None, origin, (card,)
    )
    return (yield from get_case(decision.case_id))
