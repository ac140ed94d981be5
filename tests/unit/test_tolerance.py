"""Tolerance for real models: replies as a small local model (Qwen2.5-Coder-1.5B-Instruct on
llama.cpp's server, no tool-call parser) wrote them, read as what was meant, and nothing of them
shown to the customer. Each `text` below is a reply captured from that model."""

from __future__ import annotations

import pytest

from bot.engine import AgentMessage, AwaitingUser, HandoffSent, TurnStopped
from bot.engine.text import Bounds
from bot.engine.tolerance import announced, as_tool_calls, tool_names, unlabelled
from bot.engine.transcript import AgentReply, UserTurn
from bot.models import ModelReply, ToolCall
from bot.testing import ScriptedModel, call, say
from tests.helpers import run_turn, shop

SHOP = shop().build()
AGENTS = ("Triage", "Returns", "Orders", "Fraud")
TRIAGE_TOOLS = ("handoff_to_Returns", "handoff_to_Orders")

# Captured from the raw server (see the module docstring).
BARE_JSON = '{"name": "handoff_to_Returns", "arguments": {"reason": "The shoes are too small."}}'


def shown(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, AgentMessage)]


@pytest.mark.parametrize(
    "text",
    [
        BARE_JSON,
        f"```json\n{BARE_JSON}\n```",
        f"<tool_call>\n{BARE_JSON}\n</tool_call>",
        f"Sure, let me get our returns colleague.\n```json\n{BARE_JSON}\n```",
        '{"name": "handoff_to_Returns", "arguments": "{\\"reason\\": \\"too small\\"}"}',
        '{"function": {"name": "handoff_to_Returns", "arguments": {}}}',
    ],
    ids=["bare", "fenced", "tagged", "with-prose", "string-arguments", "function-wrapped"],
)
async def test_a_call_written_as_json_is_that_call_and_nothing_is_shown(text: str) -> None:
    model = ScriptedModel([say(text), say("Which order is it?")])
    events, items = await run_turn(SHOP, model, "I want to return the shoes from order 1042")
    handoffs = [e for e in events if isinstance(e, HandoffSent)]
    assert [(h.source, h.target) for h in handoffs] == [("Triage", "Returns")]
    assert shown(events) == ["Which order is it?"]
    stored = [i for i in items if isinstance(i, AgentReply) and i.agent == "Triage"]
    assert stored[0].text is None and stored[0].tool_calls[0].name == "handoff_to_Returns"


async def test_a_tool_name_in_another_case_is_the_offered_tool() -> None:
    model = ScriptedModel([call("HANDOFF_TO_returns", {"reason": "refund"}), say("Order?")])
    events, _ = await run_turn(SHOP, model, "refund please")
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Returns"]
    written = ModelReply(text='{"name": "Handoff_To_Orders", "arguments": {}}')
    names = tool_names(TRIAGE_TOOLS, {})
    assert as_tool_calls(written, names).tool_calls[0].name == "handoff_to_Orders"


async def test_a_call_written_to_an_agent_is_its_handoff_tool() -> None:
    # Captured: the model named the agent instead of its tool.
    text = '{"name": "Returns", "arguments": {"reason": "I am talking to the Returns team."}}'
    model = ScriptedModel([say(text), say("Which order is it?")])
    events, _ = await run_turn(SHOP, model, "I want to return my order")
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Returns"]
    assert shown(events) == ["Which order is it?"]


async def test_a_call_written_to_a_tool_out_of_reach_is_refused_not_shown() -> None:
    out_of_reach = '{"name": "handoff_to_Fraud", "arguments": {"reason": "suspicious"}}'
    model = ScriptedModel([say(out_of_reach), say("How can I help with your order?")])
    events, _ = await run_turn(SHOP, model, "hello")
    assert shown(events) == ["How can I help with your order?"]
    refusal = model.requests[1].messages[-1]
    assert refusal.role == "tool" and "handoff_to_Fraud is not available to Triage" in (
        refusal.content or ""
    )
    assert not any(isinstance(e, HandoffSent) for e in events)


def test_json_that_names_no_tool_stays_text() -> None:
    answer = ModelReply(text='Your settings file should look like {"theme": "dark"}.')
    assert as_tool_calls(answer, tool_names(TRIAGE_TOOLS, {})) == answer


ANNOUNCEMENTS = [
    ("I'll transfer you to Returns now.", "Returns"),
    ("Let me connect you with our returns team.", "Returns"),
    ("Transferring you to Orders.", "Orders"),
    ("You will be transferred to the Orders department shortly.", "Orders"),
    ("I am handing you over to Orders, who can help.", "Orders"),
    ("Please wait while I call handoff_to_Orders.", "Orders"),
    ("Returns are handled within 30 days.", None),
    ("I will forward your returns request.", None),
    ("I cannot transfer you to Orders, but I can help.", None),
    ("Orders usually ship within two days.", None),
]


@pytest.mark.parametrize(("text", "target"), ANNOUNCEMENTS)
def test_an_announced_transfer_is_recognised(text: str, target: str | None) -> None:
    assert announced(text, AGENTS, "Triage") == target


async def test_an_announced_transfer_is_asked_again_once_and_never_shown() -> None:
    model = ScriptedModel(
        [
            say("I'll transfer you to Returns now."),
            call("handoff_to_Returns", {"reason": "return"}),
            say("Which order is it?"),
        ]
    )
    events, _ = await run_turn(SHOP, model, "I want to return a blender")
    assert shown(events) == ["Which order is it?"]
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Returns"]
    retry = model.requests[1].messages
    assert (
        retry[-2].role == "assistant" and retry[-2].content == "I'll transfer you to Returns now."
    )
    assert retry[-1].role == "system" and "did not call the tool" in (retry[-1].content or "")


async def test_a_transfer_announced_twice_is_made() -> None:
    model = ScriptedModel(
        [
            say("I'll transfer you to Returns now."),
            say("Sure! Transferring you to Returns."),
            say("Which order is it?"),
        ]
    )
    events, _ = await run_turn(SHOP, model, "I want to return a blender")
    assert shown(events) == ["Which order is it?"]
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Returns"]


async def test_a_transfer_out_of_reach_announced_twice_is_not_shown() -> None:
    model = ScriptedModel([say("I'll transfer you to Fraud."), say("Transferring you to Fraud.")])
    events, _ = await run_turn(SHOP, model, "hello")
    assert shown(events) == []
    assert isinstance(events[-1], TurnStopped) and events[-1].cause == "empty_reply"


async def test_no_retry_when_retries_are_turned_off() -> None:
    from bot.engine import Runner

    model = ScriptedModel([say("I'll transfer you to Orders."), say("Order status?")])
    runner = Runner(SHOP, model, Bounds(transfer_retries=0))
    events = [e async for e in runner.run([UserTurn("where is my parcel")], None)]
    assert model.calls == 2  # the announcement, then Orders; no corrective call
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Orders"]
    assert isinstance(events[-1], AwaitingUser)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("[Returns] Which order is it?", "Which order is it?"),
        ("Returns: Which order is it?", "Which order is it?"),
        ("**Returns:** Which order is it?", "Which order is it?"),
        ("[Triage] Returns: Hi!", "Hi!"),
        ("Call handoff_to_Orders for that.", "Call Orders for that."),
        ("Returns are accepted for 30 days.", "Returns are accepted for 30 days."),
        ("Returns:", "Returns:"),  # nothing left after the label: kept as written
    ],
)
def test_labels_and_tool_identifiers_are_taken_out_of_replies(text: str, clean: str) -> None:
    assert unlabelled(text, AGENTS) == clean


async def test_a_labelled_reply_is_posted_without_its_label() -> None:
    model = ScriptedModel([say("[Triage] Hello! How can I help?")])
    events, _ = await run_turn(SHOP, model, "hi")
    assert shown(events) == ["Hello! How can I help?"]


async def test_call_ids_a_server_reuses_are_made_unique() -> None:
    model = ScriptedModel(
        [
            ModelReply(tool_calls=(ToolCall("call_0", "handoff_to_Orders", "{}"),)),
            ModelReply(tool_calls=(ToolCall("call_0", "handoff_to_Returns", "{}"),)),
            say("Which order?"),
        ]
    )
    _, items = await run_turn(SHOP, model, "parcel")
    ids = [c.id for i in items if isinstance(i, AgentReply) for c in i.tool_calls]
    assert len(ids) == len(set(ids)) == 2


# Captured: a tool's error, and a handoff note, repeated as the reply.
ECHOED_ERROR = (
    "Error: Triage already had this conversation since the customer's last message; no handoff "
    "was made. Answer the customer yourself, or handoff to Orders or Fraud."
)
ECHOED_NOTE = "Triage handed this conversation to you. Reason: The shoes are too small."


@pytest.mark.parametrize(
    "text",
    [
        ECHOED_ERROR,
        ECHOED_NOTE,
        "To check the shipping status of order 6610, please call the handoff tool.",  # captured
        'To handle this issue, you can call the `Returns` function with the reason "late".',
    ],
)
async def test_the_bots_own_words_repeated_are_asked_again_and_never_shown(text: str) -> None:
    model = ScriptedModel([call("handoff_to_Returns"), say(text), say("Which order is it?")])
    events, _ = await run_turn(SHOP, model, "I want to return the shoes")
    assert shown(events) == ["Which order is it?"]
    assert "inner workings" in (model.requests[2].messages[-1].content or "")


async def test_the_bots_own_words_repeated_twice_are_not_shown() -> None:
    model = ScriptedModel([call("handoff_to_Returns"), say(ECHOED_NOTE), say(ECHOED_ERROR)])
    events, _ = await run_turn(SHOP, model, "I want to return the shoes")
    assert shown(events) == []
    assert isinstance(events[-1], TurnStopped) and events[-1].cause == "empty_reply"


def test_a_reply_that_quotes_a_tool_result_in_its_own_words_is_fine() -> None:
    from bot.engine.tolerance import echoed
    from bot.models import ChatMessage

    result = ChatMessage(
        "tool", "Order 42: shipped on 3 May, carrier DHL, tracking 123", None, (), "c"
    )
    assert echoed("Order 42: shipped on 3 May, carrier DHL, tracking 123", [result])
    assert not echoed("Your order 42 shipped on 3 May with DHL (tracking 123).", [result])


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("[Triage] (handed the conversation to Returns: too small)", True),  # captured, before
        (BARE_JSON, True),
        ("Please use handoff_to_Orders.", True),
        (ECHOED_ERROR, True),
        ("Which order is it? [optional] details help.", False),
        ('Set {"theme": "dark"} in your settings.', False),
    ],
)
def test_leaks_are_what_eval_counts(text: str, leaked: bool) -> None:
    from bot.engine.tolerance import leaks

    assert leaks(text) is leaked


async def test_an_answer_wrapped_in_a_made_up_call_is_the_answer() -> None:
    # Captured: the model wrapped its greeting in a call to a tool nobody offered.
    text = '{"name": "greeting", "arguments": {"message": "Hello! How can I assist you today?"}}'
    events, _ = await run_turn(SHOP, ScriptedModel([say(text)]), "hi")
    assert shown(events) == ["Hello! How can I assist you today?"]


async def test_a_made_up_call_with_arguments_is_refused_not_shown() -> None:
    text = '{"name": "lookup_order", "arguments": {"order": 42, "verbose": true}}'
    model = ScriptedModel([say(text), say("Which order is it?")])
    events, _ = await run_turn(SHOP, model, "status of 42")
    assert shown(events) == ["Which order is it?"]
    assert "no tool named 'lookup_order'" in (model.requests[1].messages[-1].content or "")


def test_a_bare_call_without_arguments_is_still_a_call() -> None:
    reply = as_tool_calls(
        ModelReply(text='{"name": "handoff_to_Returns"}'), tool_names(TRIAGE_TOOLS, {})
    )
    assert [c.name for c in reply.tool_calls] == ["handoff_to_Returns"]
