"""Replies as they are written: the runner's `Writing` events and what of them may be shown."""

from __future__ import annotations

from bot.engine import AgentMessage, HandoffSent, ModelCalled, Runner, Writing
from bot.engine.transcript import UserTurn
from bot.models import ModelReply, ToolCall
from bot.service.streaming import Rate
from bot.testing import ScriptedModel, call, say
from tests.helpers import run_turn, shop

SHOP = shop().build()


async def test_the_reply_grows_then_comes_whole() -> None:
    events, _ = await run_turn(SHOP, ScriptedModel([say("Which order is it, please?")]), "hi")
    writing = [e.text for e in events if isinstance(e, Writing)]
    assert writing == [
        "Which",
        "Which order",
        "Which order is",
        "Which order is it,",
        "Which order is it, please?",
    ]
    whole = next(e for e in events if isinstance(e, ModelCalled))
    assert events.index(whole) > max(i for i, e in enumerate(events) if isinstance(e, Writing))
    assert whole.reply.text == writing[-1]


async def test_text_before_a_handoff_belongs_to_the_agent_that_wrote_it() -> None:
    mixed = ScriptedModel(
        [
            ModelReply(
                text="Let me get Returns.", tool_calls=(ToolCall("c1", "handoff_to_Returns"),)
            ),
            say("Order number?"),
        ]
    )
    events, _ = await run_turn(SHOP, mixed, "refund")
    shown = [(e.agent, e.text) for e in events if isinstance(e, Writing)]
    assert shown[-1] == ("Returns", "Order number?")
    assert ("Triage", "Let me get Returns.") in shown
    handoff = next(i for i, e in enumerate(events) if isinstance(e, HandoffSent))
    assert all(e.agent == "Triage" for e in events[:handoff] if isinstance(e, Writing))
    assert [(e.agent, e.text) for e in events if isinstance(e, AgentMessage)] == [
        ("Triage", "Let me get Returns."),
        ("Returns", "Order number?"),
    ]


async def test_a_slip_is_taken_back_before_the_agent_is_asked_again() -> None:
    model = ScriptedModel(
        [say("I'll transfer you to Returns now."), call("handoff_to_Returns"), say("Order?")]
    )
    events, _ = await run_turn(SHOP, model, "refund please")
    triage = [e.text for e in events if isinstance(e, Writing) and e.agent == "Triage"]
    assert triage[-1] == ""  # what was shown is taken back
    assert not any(isinstance(e, AgentMessage) and e.agent == "Triage" for e in events)


def test_only_what_may_be_shown_is_shown() -> None:
    runner = Runner(SHOP, ScriptedModel())
    assert runner.showable('{"name": "handoff_to_Returns", "argu') == ""  # may be a call
    assert runner.showable("[") == "" and runner.showable('[{"name"') == ""
    assert runner.showable("```json\n{") == "" and runner.showable("<tool_call>") == ""
    assert runner.showable("[Returns] Which order") == "Which order"  # a label, not a call
    assert runner.showable("Returns: Which\x00 order\u202e") == "Which order"
    assert runner.showable("word " * 3000).endswith("…(the reply was cut at 8,000 characters)")
    written = 'Let me check. <tool_call>{"name": "lookup_order", "arguments": {"order_id": "1'
    assert runner.showable(written) == "Let me check."  # a call after some words: the words
    assert runner.showable('Sure. {"name": "x"') == "Sure."


async def test_no_writing_when_streaming_is_off() -> None:
    runner = Runner(SHOP, ScriptedModel([say("Hello there.")]), stream=False)
    events = [e async for e in runner.run([UserTurn("hi")], None)]
    assert not any(isinstance(e, Writing) for e in events)
    assert any(isinstance(e, AgentMessage) and e.text == "Hello there." for e in events)


def test_the_edit_budget_keeps_room_for_a_message_s_first_edit() -> None:
    rate = Rate(per_s=40 / 60, burst=5, kept=2)
    assert [rate.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]  # 5 -> 2 tokens left
    assert rate.reserve() > 0  # a later edit waits: what is left is kept for first edits
    assert Rate(per_s=40 / 60, burst=5, kept=2).reserve(first=True) == 0.0
    spent = Rate(per_s=40 / 60, burst=5, kept=2)
    for _ in range(3):
        spent.reserve()
    assert spent.reserve(first=True) == 0.0 and spent.reserve(first=True) == 0.0
    assert spent.reserve(first=True) > 0  # the budget itself is never overdrawn
    assert Rate(per_s=None).reserve() == 0.0  # no budget: the platform's client keeps to it
