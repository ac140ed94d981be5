"""Handoffs that carry data: declared arguments with types, validated when the call comes, stored
with the handoff, read by the target and shown on a review card; an `on_handoff` hook that runs
when the handoff happens, whose failure is reported while the handoff still happens."""

from __future__ import annotations

import json

import pytest

from bot.engine import HandoffSent, Runner
from bot.engine.errors import WorkflowError
from bot.engine.handoffs import HandoffInfo
from bot.engine.loader import parse_workflow
from bot.engine.transcript import HandoffRecord, Notice
from bot.service import ConversationService, IncomingMessage
from bot.store import Store
from bot.testing import ScriptedModel, call, say
from tests.helpers import run_turn

OPENED: list[HandoffInfo] = []


def open_ticket(info: HandoffInfo) -> None:
    OPENED.append(info)


def broken_ticket(info: HandoffInfo) -> None:
    raise ConnectionError("ticket system down")


def workflow(hook: str = "open_ticket") -> str:
    return f"""
start: Returns
agents:
  - name: Returns
    instructions: You handle returns.
  - name: Fraud
    instructions: You review.
    review: moderators
handoffs:
  - from: Returns
    to: Fraud
    reason: Suspected fraud.
    arguments:
      order_id: {{type: string, description: The order in question.}}
      priority: {{type: string, enum: [low, high], required: false}}
      amount: {{type: number, required: false}}
    on_handoff: {__name__}.{hook}
"""


FLOW = parse_workflow(workflow())


@pytest.fixture(autouse=True)
def _fresh() -> None:
    OPENED.clear()


def test_the_handoff_tool_offers_the_declared_arguments() -> None:
    (tool,) = FLOW.handoffs("Returns")
    schema = tool.spec.parameters
    assert set(schema["properties"]) == {"reason", "order_id", "priority", "amount"}
    assert schema["required"] == ["order_id"]
    assert schema["properties"]["priority"] == {"type": "string", "enum": ["low", "high"]}


def test_bad_declarations_name_the_field_and_fix() -> None:
    bad_type = workflow().replace("order_id: {type: string", "order_id: {type: strin")
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(bad_type, source="flow.yaml")
    assert "flow.yaml: handoffs[0].arguments.order_id.type: input should be" in str(caught.value)
    bad_name = workflow().replace("order_id: {type: string", "order id: {type: string")
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(bad_name, source="flow.yaml")
    assert "handoffs[0].arguments.order id: is not a usable name" in str(caught.value)
    missing = workflow(hook="no_such_hook")
    with pytest.raises(WorkflowError, match=r"handoffs\[0\]\.on_handoff: cannot import"):
        parse_workflow(missing)


async def test_valid_data_is_stored_with_the_handoff_and_the_hook_runs() -> None:
    model = ScriptedModel(
        [
            call(
                "handoff_to_Fraud", {"reason": "3rd claim", "order_id": "1042", "priority": "high"}
            ),
            say("A colleague will look at this."),
        ]
    )
    events, items = await run_turn(FLOW, model, "refund again please")
    sent = next(e for e in events if isinstance(e, HandoffSent))
    assert sent.data == {"order_id": "1042", "priority": "high"} and sent.hook_error is None
    record = next(i for i in items if isinstance(i, HandoffRecord))
    assert record.data == {"order_id": "1042", "priority": "high"}
    assert [(o.source, o.target, o.reason, dict(o.data)) for o in OPENED] == [
        ("Returns", "Fraud", "3rd claim", {"order_id": "1042", "priority": "high"})
    ]
    fraud = model.requests[-1]
    assert "order_id='1042'" in (fraud.messages[0].content or "")  # the target reads the data


async def test_bad_data_is_refused_and_the_model_calls_again() -> None:
    model = ScriptedModel(
        [
            call("handoff_to_Fraud", {"reason": "x", "priority": "urgent"}),
            call("handoff_to_Fraud", {"reason": "x", "order_id": "1042", "amount": 150}),
            say("Reviewing."),
        ]
    )
    events, _ = await run_turn(FLOW, model, "refund")
    first = model.requests[1].messages[-1].content or ""
    assert "invalid arguments for handoff_to_Fraud" in first and "order_id" in first
    assert "priority" in first and "No handoff was made" in first
    handoffs = [e for e in events if isinstance(e, HandoffSent)]
    assert [h.data for h in handoffs] == [{"order_id": "1042", "amount": 150.0}]
    assert len(OPENED) == 1


async def test_a_failing_hook_is_reported_and_the_handoff_happens() -> None:
    flow = parse_workflow(workflow(hook="broken_ticket"))
    model = ScriptedModel(
        [call("handoff_to_Fraud", {"order_id": "1042"}), say("A colleague will look at this.")]
    )
    events, items = await run_turn(flow, model, "refund")
    sent = next(e for e in events if isinstance(e, HandoffSent))
    assert sent.hook_error == "ConnectionError: ticket system down"
    assert Notice("on_handoff failed: ConnectionError: ticket system down") in items
    assert model.requests[-1].agent == "Fraud"


async def test_the_review_card_shows_the_data(store: Store) -> None:
    model = ScriptedModel(
        [call("handoff_to_Fraud", {"order_id": "1042", "priority": "high"}), say("Reviewing.")]
    )
    service = ConversationService(FLOW, model, store)
    result = await service.handle(IncomingMessage("test", "C1", "t1", "refund", author="ana"))
    (case,) = result.cases
    card = await service.moderation.card(case)
    assert 'handoff from Returns: order_id="1042", priority="high"' in card.excerpt
    entries = await store.entries(case.session_id)
    stored = next(e.item for e in entries if isinstance(e.item, HandoffRecord))
    assert json.dumps(stored.data) == '{"order_id": "1042", "priority": "high"}'


async def test_a_failed_hook_never_ends_a_resumed_turn() -> None:
    """The hook's note is stored before the handoff record: a turn cut short while the target
    thinks is taken up again, not seen as finished."""
    flow = parse_workflow(workflow(hook="broken_ticket"))
    model = ScriptedModel([call("handoff_to_Fraud", {"order_id": "1042"}), say("Reviewing.")])
    _, items = await run_turn(flow, model, "refund")
    stored = items[: items.index(next(i for i in items if isinstance(i, HandoffRecord))) + 1]
    assert isinstance(stored[-1], HandoffRecord)
    resumed = ScriptedModel([say("A colleague will look at this.")])
    going_on = [e async for e in Runner(flow, resumed).run(stored, "Returns", start=0)]
    assert [r.agent for r in resumed.requests] == ["Fraud"] and going_on
