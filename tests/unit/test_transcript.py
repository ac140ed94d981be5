"""Transcript items: storage round trip, each agent's view, and the token window."""

from __future__ import annotations

import pytest

from bot.engine import (
    AgentReply,
    ContinuationPrompt,
    HandoffRecord,
    Notice,
    ToolOutcome,
    UserTurn,
    view_for,
)
from bot.engine.transcript import INTERRUPTED, Item, item_from_dict, item_to_dict, trim_window
from bot.models import ToolCall

CONVERSATION: list[Item] = [
    UserTurn("refund for order 7", author="ana"),
    AgentReply("Triage", None, (ToolCall("h1", "handoff_to_Returns", '{"reason": "refund"}'),)),
    ToolOutcome("Triage", "h1", "handoff_to_Returns", "Handed off to Returns."),
    HandoffRecord("Triage", "Returns", "refund"),
    AgentReply("Returns", "Checking.", (ToolCall("t1", "check_refunds", '{"order": 7}'),)),
    ToolOutcome("Returns", "t1", "check_refunds", "3 refunds this month", is_error=False),
    AgentReply("Returns", "A colleague will review this."),
    ContinuationPrompt("Returns", "Continue."),
    Notice("Turn stopped."),
]


@pytest.mark.parametrize("item", CONVERSATION)
def test_items_round_trip_through_their_stored_form(item: Item) -> None:
    assert item_from_dict(item.kind, item_to_dict(item)) == item


def test_returns_sees_its_own_tools_and_the_handoff_as_a_note_in_its_instructions() -> None:
    view = view_for("Returns", "Be Returns.", CONVERSATION)
    handed = (
        "Be Returns.\n\nTriage has just handed this conversation to you (reason: refund). "
        "Answer the customer's last message yourself."
    )
    assert [(m.role, m.content, m.tool_call_id) for m in view] == [
        ("system", handed, None),
        ("user", "refund for order 7", None),
        ("assistant", "Checking.", None),
        ("tool", "3 refunds this month", "t1"),
        ("assistant", "A colleague will review this.", None),
        ("user", "Continue.", None),
    ]
    assert view[2].tool_calls[0].name == "check_refunds"
    assert all("handoff_to_Returns" not in str(m.tool_calls) for m in view)


def test_orders_reads_what_others_did_since_the_customer_spoke_as_a_note() -> None:
    view = view_for("Orders", "Be Orders.", CONVERSATION)
    assert [(m.role, m.content, m.name) for m in view] == [
        (
            "system",
            "Be Orders.\n\nTriage handed this conversation to Returns (reason: refund).\n\n"
            "Returns told the customer: Checking.\n\n"
            "Returns told the customer: A colleague will review this.",
            None,
        ),
        ("user", "refund for order 7", None),  # the request ends on the customer's words
    ]


def test_earlier_replies_are_named_by_speaker_without_labels() -> None:
    earlier = [*CONVERSATION[:-2], UserTurn("and my parcel?")]
    view = view_for("Orders", "Be Orders.", earlier)
    assert [(m.role, m.content, m.name) for m in view[1:]] == [
        ("user", "refund for order 7", None),
        ("assistant", "Checking.", "Returns"),
        ("assistant", "A colleague will review this.", "Returns"),
        ("user", "and my parcel?", None),
    ]
    assert view[0].content == "Be Orders."  # earlier handoffs: their replies tell the story
    assert not any(m.tool_calls or m.role == "tool" for m in view)


def test_a_call_without_a_stored_result_gets_an_interrupted_result() -> None:
    crashed = [UserTurn("hi"), AgentReply("Clerk", None, (ToolCall("c1", "lookup", "{}"),))]
    view = view_for("Clerk", "", crashed)
    assert view[-1].role == "tool" and view[-1].tool_call_id == "c1"
    assert view[-1].content == INTERRUPTED


def test_window_keeps_the_newest_items_within_budget_and_drops_orphan_results() -> None:
    items: list[Item] = [UserTurn("x" * 400) for _ in range(10)]
    assert len(trim_window(items, 1_000)) == 9  # 104 tokens each
    orphan = [
        AgentReply("A", None, (ToolCall("c", "t", "{}"),)),
        ToolOutcome("A", "c", "t", "y" * 4_000),
        UserTurn("hi"),
    ]
    assert trim_window(orphan, 1_010) == [UserTurn("hi")]
    assert trim_window([UserTurn("z" * 40_000)], 10) == [UserTurn("z" * 40_000)]
