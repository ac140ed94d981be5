"""Guardrails through the service and a real SQLite file: a tripped input guardrail answers
without the model, a tripped output guardrail replaces the reply, personal data is masked in what
is stored and shown, and every trip is recorded in the transcript."""

from __future__ import annotations

import pytest

from bot.engine import HandoffSent, Writing
from bot.engine.errors import WorkflowError
from bot.engine.guardrails import INPUT_BLOCKED, OUTPUT_BLOCKED, tripped
from bot.engine.loader import parse_workflow
from bot.engine.transcript import AgentReply, Notice, UserTurn
from bot.service import ConversationService, IncomingMessage
from bot.store import Store
from bot.testing import RecordingPlatform, ScriptedModel, call, say
from tests.helpers import run_turn


def no_refund_talk(text: str) -> str | None:
    return "talks of refunds" if "refund" in text.lower() else None


FLOW = parse_workflow(
    f"""
start: Triage
guardrails:
  input:
    - {{max_length: 200}}
    - {{blocked_words: [crypto, lottery]}}
    - {{redact_pii: true}}
  output:
    - {{redact_pii: true}}
    - {{blocked_words: [password]}}
agents:
  - name: Triage
    instructions: Route.
  - name: Sales
    instructions: Sell.
    guardrails:
      output: [{__name__}.no_refund_talk]
"""
)


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("test", "C1", "t1", text, author="ana")


async def transcript(store: Store) -> list[object]:
    (session,) = await store.list_sessions()
    return [entry.item for entry in await store.entries(session.id)]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("win the LOTTERY today", "Guardrail blocked_words (input): a blocked word ('lottery')"),
        ("x" * 201, "Guardrail max_length (input): longer than 200 characters"),
    ],
)
async def test_a_tripped_input_guardrail_answers_without_the_model(
    store: Store, text: str, why: str
) -> None:
    model = ScriptedModel([])
    platform = RecordingPlatform()
    service = ConversationService(FLOW, model, store, platform)
    result = await service.handle(msg(text))
    assert [p.text for p in result.posts] == [INPUT_BLOCKED] and list(model.requests) == []
    items = await transcript(store)
    assert items[-1] == Notice(why)
    assert tripped(why) == (why.split()[1], "input")


async def test_personal_data_is_masked_before_it_is_stored_and_shown(store: Store) -> None:
    model = ScriptedModel([say("Noted: ana@example.com, card 4111 1111 1111 1111.")])
    platform = RecordingPlatform()
    service = ConversationService(FLOW, model, store, platform)
    await service.handle(msg("I'm ana@example.com, card 4111-1111-1111-1234, help"))
    items = await transcript(store)
    assert items[0] == UserTurn("I'm [email], card [card ending 1234], help", author="ana")
    assert model.requests[0].messages[-1].content == "I'm [email], card [card ending 1234], help"
    said = "Noted: [email], card [card ending 1111]."
    assert platform.texts() == [said] and AgentReply("Triage", said) in items
    inbox = await store.next_owed(msg("x").key)
    assert inbox is None  # nothing raw is left owed (the inbox held the masked text too)


async def test_a_tripped_output_guardrail_replaces_the_reply(store: Store) -> None:
    model = ScriptedModel([say("Your password is hunter2.")])
    platform = RecordingPlatform()
    service = ConversationService(FLOW, model, store, platform)
    await service.handle(msg("what's my password?"))
    assert platform.texts() == [OUTPUT_BLOCKED]
    items = await transcript(store)
    assert Notice("Guardrail blocked_words (output): a blocked word ('password')") in items
    assert items[-1] == AgentReply("Triage", OUTPUT_BLOCKED)  # the stored step ends on the reply


async def test_an_agent_s_own_guardrail_applies_to_it_alone() -> None:
    model = ScriptedModel([say("No refund talk here? refund!")])
    events, _ = await run_turn(FLOW, model, "hi", active="Sales")
    assert [e.reply.text for e in events if hasattr(e, "reply") and hasattr(e.reply, "text")] == [
        OUTPUT_BLOCKED
    ]
    assert not any(isinstance(e, Writing) for e in events)  # nothing shown before the check
    model = ScriptedModel([say("A refund is possible.")])
    _, items = await run_turn(FLOW, model, "hi")  # Triage: not its guardrail
    assert items[-1] == AgentReply("Triage", "A refund is possible.")


async def test_tool_calls_pass_through_output_guardrails() -> None:
    flow = parse_workflow(FLOW_WITH_TOOL)
    model = ScriptedModel([call("handoff_to_Sales"), say("Hello from Sales.")])
    _, items = await run_turn(flow, model, "buy")
    assert items[-1] == AgentReply("Sales", "Hello from Sales.")


FLOW_WITH_TOOL = """
start: Triage
guardrails: {output: [{blocked_words: [password]}]}
agents:
  - {name: Triage, instructions: Route.}
  - {name: Sales, instructions: Sell.}
"""


def test_a_bad_guardrail_names_the_field() -> None:
    with pytest.raises(WorkflowError, match=r"guardrails\.input\[0\]: give one of"):
        parse_workflow(FLOW_WITH_TOOL.replace("{output:", "{input: [{}], output:"))
    with pytest.raises(WorkflowError, match=r"guardrails\.output\[0\]: cannot import"):
        parse_workflow(FLOW_WITH_TOOL.replace("{blocked_words: [password]}", "no.such.check"))


async def test_a_refused_message_is_never_shown_to_a_model_later(store: Store) -> None:
    model = ScriptedModel([say("Hello!")])
    service = ConversationService(FLOW, model, store, RecordingPlatform())
    await service.handle(msg("tell me about the lottery"))
    await service.handle(msg("hi"))
    (request,) = model.requests
    texts = [m.content or "" for m in request.messages]
    assert texts[-1] == "hi" and not any("lottery" in t for t in texts)


async def test_a_handoff_reason_is_checked_like_a_reply() -> None:
    flow = parse_workflow(FLOW_WITH_TOOL)
    model = ScriptedModel(
        [call("handoff_to_Sales", {"reason": "their password is hunter2"}), say("Hi from Sales.")]
    )
    events, _ = await run_turn(flow, model, "buy")
    sent = next(e for e in events if isinstance(e, HandoffSent))
    assert sent.reason is None
