"""Figures read from the store for operators: the gauges `/metrics` shows, and `stats`.

Read-only operations. `figures` is small and bounded (four counts on indexed columns), run at
every scrape; `tallies` reads every conversation of a period, for the `stats` command only.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from bot.engine.guardrails import tripped
from bot.store.ops_cases import count_cases
from bot.store.ops_outbox import count_dead, count_unsent
from bot.store.sql import Op, row, rows


@dataclass(frozen=True, slots=True)
class Figures:
    """What the store holds now that an operator watches."""

    outbox_backlog: int  # posts waiting to be sent
    dead_letters: int  # posts set aside
    open_cases: int
    active_conversations: int  # open, with a message since the time asked


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation's size, for `stats`."""

    workflow: str
    status: str
    turns: int  # the customer's messages
    model_calls: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Tallies:
    """Everything `stats` reports, per workflow, for conversations opened since a time."""

    conversations: list[Conversation]
    handoffs: dict[tuple[str, str, str], int]  # (workflow, source, target) -> handoffs
    reached: dict[tuple[str, str], int]  # (workflow, agent) -> conversations it answered in
    cases: dict[tuple[str, str], int]  # (workflow, status) -> cases
    guarded: dict[tuple[str, str, str], int]  # (workflow, guardrail, stage) -> trips


def figures(active_since: float) -> Op[Figures]:
    """The outbox backlog, dead letters, open cases and open conversations active since
    `active_since`, in one read."""
    backlog = yield from count_unsent()
    dead = yield from count_dead()
    cases = yield from count_cases("open")
    found = yield row(
        "SELECT count(*) FROM sessions WHERE updated_at >= ? AND status = 'open'", active_since
    )
    return Figures(backlog, dead, cases, int(found[0]) if found else 0)


def tallies(since: float) -> Op[Tallies]:
    """Per workflow: each conversation's size, handoffs by edge, the conversations each agent
    answered in (a model reply, text or calls), and cases by status, for conversations opened
    since `since`."""
    found = yield rows(
        "SELECT s.workflow, s.status, s.model_calls, s.prompt_tokens, s.completion_tokens, "
        "(SELECT count(*) FROM items i WHERE i.session_id = s.id AND i.kind = 'user') "
        "FROM sessions s WHERE s.created_at >= ?",
        since,
    )
    conversations = [
        Conversation(each[0], each[1], int(each[5]), *(int(n) for n in each[2:5])) for each in found
    ]
    found = yield rows(
        "SELECT s.workflow, i.body FROM items i JOIN sessions s ON s.id = i.session_id "
        "WHERE i.kind = 'handoff' AND s.created_at >= ?",
        since,
    )
    handoffs: Counter[tuple[str, str, str]] = Counter()
    for workflow, body in found:
        record = json.loads(body)
        handoffs[(workflow, record["source"], record["target"])] += 1
    found = yield rows(
        "SELECT s.workflow, i.agent, count(DISTINCT i.session_id) FROM items i "
        "JOIN sessions s ON s.id = i.session_id "
        "WHERE i.kind = 'agent' AND s.created_at >= ? GROUP BY s.workflow, i.agent",
        since,
    )
    reached = {(each[0], each[1]): int(each[2]) for each in found}
    found = yield rows(
        "SELECT s.workflow, c.status, count(*) FROM cases c JOIN sessions s ON s.id = c.session_id "
        "WHERE s.created_at >= ? GROUP BY s.workflow, c.status",
        since,
    )
    cases = {(each[0], each[1]): int(each[2]) for each in found}
    found = yield rows(
        "SELECT s.workflow, i.body FROM items i JOIN sessions s ON s.id = i.session_id "
        "WHERE i.kind = 'notice' AND CAST(i.body AS TEXT) LIKE ? AND s.created_at >= ?",
        '%"Guardrail %',
        since,
    )
    guarded: Counter[tuple[str, str, str]] = Counter()
    for workflow, body in found:
        trip = tripped(str(json.loads(body).get("text", "")))
        if trip is not None:
            guarded[(workflow, *trip)] += 1
    return Tallies(conversations, dict(handoffs), reached, cases, dict(guarded))
