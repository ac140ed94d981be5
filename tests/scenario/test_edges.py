"""Edges shaped per handoff: `when:` offers an edge only while a condition on the conversation
holds (a call to it otherwise is refused like an undeclared one), and `history:` sets what the
target sees of the conversation before the handoff (all, the last N messages, or a summary the
source writes), always with the customer's latest message."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bot.engine import HandoffSent
from bot.engine.errors import WorkflowError
from bot.engine.graph import mermaid
from bot.engine.loader import parse_workflow
from bot.engine.transcript import AgentReply, Item, UserTurn
from bot.testing import ScriptedModel, call, say
from tests.helpers import run_turn


def verified(items: Sequence[Item]) -> bool:
    """The customer gave an order number (a message with 4 digits)."""
    return any(isinstance(i, UserTurn) and any(w.isdigit() for w in i.text.split()) for i in items)


def flow(history: str = "full", when: str | None = None) -> str:
    condition = f"\n    when: {__name__}.{when}" if when else ""
    return f"""
start: Triage
agents:
  - name: Triage
    instructions: Route.
  - name: Refunds
    instructions: Refund.
handoffs:
  - from: Triage
    to: Refunds
    history: {history}{condition}
"""


HISTORY = [
    UserTurn("hello"),
    AgentReply("Triage", "Hi, how can I help?"),
    UserTurn("my card number is 4111"),
    AgentReply("Triage", "Thanks."),
]


def seen_by_refunds(model: ScriptedModel) -> list[str]:
    request = next(r for r in model.requests if r.agent == "Refunds")
    return [m.content or "" for m in request.messages[1:]]


async def test_a_disabled_edge_is_not_offered_and_a_call_to_it_is_refused() -> None:
    workflow = parse_workflow(flow(when="verified"))
    model = ScriptedModel([call("handoff_to_Refunds"), say("Which order is it?")])
    events, _ = await run_turn(workflow, model, "I want a refund")
    assert [t.name for t in model.requests[0].tools] == []  # not offered
    assert not any(isinstance(e, HandoffSent) for e in events)
    refusal = model.requests[1].messages[-1].content or ""
    assert "handoff_to_Refunds is not available to Triage" in refusal

    model = ScriptedModel([call("handoff_to_Refunds"), say("Refunding.")])
    events, _ = await run_turn(workflow, model, "refund order 1042")
    assert [t.name for t in model.requests[0].tools] == ["handoff_to_Refunds"]
    assert any(isinstance(e, HandoffSent) for e in events)


async def test_a_condition_that_fails_disables_the_edge() -> None:
    workflow = parse_workflow(flow(when="broken"))
    model = ScriptedModel([say("I can help here.")])
    await run_turn(workflow, model, "refund")
    assert model.requests[0].tools == ()


def broken(items: Sequence[Item]) -> bool:
    raise RuntimeError("no")


async def test_full_history_is_the_default() -> None:
    model = ScriptedModel([call("handoff_to_Refunds"), say("ok")])
    await run_turn(parse_workflow(flow()), model, "refund please", history=HISTORY)
    seen = seen_by_refunds(model)
    assert "hello" in seen and "my card number is 4111" in seen and seen[-1] == "refund please"


async def test_last_n_keeps_the_last_messages_and_the_latest_one() -> None:
    model = ScriptedModel([call("handoff_to_Refunds"), say("ok")])
    workflow = parse_workflow(flow(history="{last: 1}"))
    await run_turn(workflow, model, "refund please", history=HISTORY)
    seen = seen_by_refunds(model)
    assert "hello" not in seen and "my card number is 4111" not in seen
    assert seen[-1] == "refund please"


async def test_summary_replaces_the_earlier_transcript() -> None:
    workflow = parse_workflow(flow(history="summary"))
    (tool,) = workflow.handoffs("Triage")
    assert tool.spec.parameters["required"] == ["summary"]
    model = ScriptedModel(
        [call("handoff_to_Refunds", {"summary": "Wants a refund for order 1042."}), say("ok")]
    )
    await run_turn(workflow, model, "refund please", history=HISTORY)
    request = next(r for r in model.requests if r.agent == "Refunds")
    texts = [m.content or "" for m in request.messages]
    assert not any("hello" in t or "4111" in t for t in texts)
    assert "Their summary of the conversation so far: Wants a refund for order 1042." in texts[0]
    assert texts[-1] == "refund please"


def test_bad_edge_options_name_the_field() -> None:
    with pytest.raises(WorkflowError, match=r"handoffs\[0\]\.history"):
        parse_workflow(flow(history="{last: 0}"))
    with pytest.raises(WorkflowError, match=r"handoffs\[0\]\.when: cannot import"):
        parse_workflow(flow(when="nowhere"))


def test_graph_marks_a_conditional_edge() -> None:
    drawn = mermaid(parse_workflow(flow(when="verified")))
    assert 'a0_Triage -.->|"when verified"| a1_Refunds' in drawn
    assert "a0_Triage --> a1_Refunds" in mermaid(parse_workflow(flow()))
