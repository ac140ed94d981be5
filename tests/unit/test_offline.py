"""The offline demo model: deterministic routing by rare shared words, the demo shop's tools
called as the words ask, and an honest answer."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path

import pytest

from bot import shop
from bot.engine import (
    AgentMessage,
    ApprovalAsked,
    AwaitingUser,
    Event,
    HandoffSent,
    Item,
    ToolCalled,
    approvals,
    tolerance,
)
from bot.engine.approvals import AWAITING_APPROVAL
from bot.engine.loader import load_workflow
from bot.models import OfflineModel
from bot.models.base import ChatMessage, ModelRequest, ToolCall
from tests.helpers import run_turn

WORKFLOWS = Path(__file__).parents[2] / "workflows"
SHOP = load_workflow(WORKFLOWS / "ecommerce.yaml")


@pytest.fixture(autouse=True)
def shop_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo shop's file for this test: the shipped workflow's agents call it."""
    path = tmp_path / "shop.db"
    monkeypatch.setenv("BOT_SHOP_DATABASE", str(path))
    return path


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("I want to return my order", "Returns"),
        ("I need a refund for a damaged item", "Returns"),
        ("Where is my parcel? I want tracking for the delivery", "Orders"),
        ("Can I cancel my order before it ships?", "Orders"),
        ("Hello there", None),
        ("", None),
    ],
)
async def test_routes_from_triage_by_description_words(text: str, target: str | None) -> None:
    events, _ = await run_turn(SHOP, OfflineModel(), text)
    handoffs = [e.target for e in events if isinstance(e, HandoffSent)]
    assert handoffs == ([target] if target else [])


async def test_it_says_what_it_is_once_per_conversation() -> None:
    events, history = await run_turn(SHOP, OfflineModel(), "I want to return my order")
    first = [e.text for e in events if isinstance(e, AgentMessage)]
    assert first[0].startswith('Returns here. You said: "I want to return my order".')
    assert "offline demo model" in first[0] and "OPENAI_API_KEY" in first[0]
    events, _ = await run_turn(SHOP, OfflineModel(), "Order 42", history=history, active="Returns")
    assert [e.text for e in events if isinstance(e, AgentMessage)] == [
        'Returns here. You said: "Order 42".'
    ]


# Conversations as a person would route them: (workflow, [(message, agent that answers)]).
CONVERSATIONS = [
    ("ecommerce", [("hi", "Triage"), ("I want to return my order", "Returns")]),
    (
        "ecommerce",
        [
            ("I'd like to send back the boots I bought", "Returns"),
            ("where is my other order #B5678?", "Orders"),
            ("tracking status for that shipment", "Orders"),
        ],
    ),
    (
        "ecommerce",
        [
            ("the jacket has a broken zip, can I get my money back?", "Returns"),
            (
                "I've returned 12 pairs this month and want refunds without sending them back",
                "Fraud",
            ),
            ("so when do I get the money?", "Fraud"),
        ],
    ),
    (
        "ecommerce",
        [
            ("my package is late, the carrier says it is stuck", "Orders"),
            ("order 5512", "Orders"),
            ("it finally came but it's the wrong colour, I want to exchange it", "Returns"),
        ],
    ),
    ("ecommerce", [("can I change the address for my order?", "Orders")]),
    ("ecommerce", [("what is your return policy?", "Returns")]),
    ("ecommerce", [("good evening", "Triage"), ("thanks, bye", "Triage")]),
    ("ecommerce", [("the item arrived damaged", "Returns"), ("order 88", "Returns")]),
    (
        "ecommerce",
        [
            ("refund my order 301 please", "Returns"),
            ("the box was empty, like my last three parcels, refund them all", "Fraud"),
        ],
    ),
    ("ecommerce", [("when will my parcel arrive?", "Orders"), ("ok thanks", "Orders")]),
    (
        "helpdesk",
        [
            ("my invoice shows a double charge", "Billing"),
            ("and the app crashes at login", "Tech"),
            ("can I switch to the yearly plan?", "Billing"),
        ],
    ),
    ("helpdesk", [("hello", "Triage"), ("installation fails with an error", "Tech")]),
    ("helpdesk", [("I forgot my password and cannot log in", "Tech")]),
    ("content", [("research the history of tea", "Researcher")]),
    ("content", [("find sources on solar power in Spain", "Researcher")]),
    ("ecommerce", [("please cancel order 7003 before it ships", "Orders")]),
]


@pytest.mark.parametrize(
    ("workflow", "turns"), CONVERSATIONS, ids=[turns[0][0][:30] for _, turns in CONVERSATIONS]
)
async def test_routes_as_a_person_would(workflow: str, turns: list[tuple[str, str]]) -> None:
    flow = load_workflow(WORKFLOWS / f"{workflow}.yaml")
    history: list[Item] = []
    active: str | None = None
    answered = []
    for text, _ in turns:
        events, history = await run_turn(flow, OfflineModel(), text, history=history, active=active)
        active = next(e.agent for e in events if isinstance(e, AwaitingUser))
        answered.append(next(e.agent for e in events if isinstance(e, AgentMessage)))
    assert answered == [agent for _, agent in turns]


def test_the_table_is_at_least_thirty_messages() -> None:
    assert sum(len(turns) for _, turns in CONVERSATIONS) >= 30


async def test_it_is_deterministic() -> None:
    runs = [await run_turn(SHOP, OfflineModel(), "refund my broken order") for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


# The demo shop's tools, as the shipped workflow offers them (bot/shop.py, a file per test).
SHOP_TOOLS = {
    tool.name: tool.spec for agent in SHOP.agents.values() for tool in agent.function_tools
}
ORDERS_TOOLS = ("lookup_order", "change_address", "cancel_order")
RETURNS_TOOLS = ("lookup_order", "start_return", "issue_refund")


def request(agent: str, tools: tuple[str, ...], *messages: ChatMessage) -> ModelRequest:
    system = ChatMessage("system", f"You are {agent}.")
    specs = tuple(SHOP_TOOLS[name] for name in tools)
    return ModelRequest(agent, (system, *messages), specs, description=f"{agent} of the shop.")


@pytest.mark.parametrize(
    ("agent", "tools", "text", "name", "arguments"),
    [
        ("Orders", ORDERS_TOOLS, "where is my order 1042?", "lookup_order", {}),
        (
            "Returns",
            RETURNS_TOOLS,
            "please refund 150 for order 1042",
            "issue_refund",
            {"amount": 150.0},
        ),
        (
            "Returns",
            RETURNS_TOOLS,
            "refund 49,90 on #1042 please",
            "issue_refund",
            {"amount": 49.9},
        ),
        (
            "Returns",
            RETURNS_TOOLS,
            "return order 1042 because it is broken.",
            "start_return",
            {"reason": "it is broken"},
        ),
        (
            "Returns",
            RETURNS_TOOLS,
            "I'd like to send it back, order 1042",
            "start_return",
            {"reason": "I'd like to send it back, order 1042"},
        ),
        ("Orders", ORDERS_TOOLS, "cancel order 1042", "cancel_order", {}),
        (
            "Orders",
            ORDERS_TOOLS,
            "change the address of order 1042 to 1 Main St, Paris.",
            "change_address",
            {"address": "1 Main St, Paris"},
        ),
        # a question, or an action this agent is not offered, looks the order up
        ("Orders", ORDERS_TOOLS, "Can I still cancel order 1042?", "lookup_order", {}),
        ("Orders", ORDERS_TOOLS, "please refund 150 for order 1042", "lookup_order", {}),
        ("Returns", RETURNS_TOOLS, "I want a refund for order 1042", "lookup_order", {}),
        ("Returns", RETURNS_TOOLS, "the return of order 1042 arrived", "lookup_order", {}),
    ],
)
async def test_it_calls_the_shop_tool_the_words_ask_for(
    agent: str, tools: tuple[str, ...], text: str, name: str, arguments: dict[str, object]
) -> None:
    reply = await OfflineModel().complete(request(agent, tools, ChatMessage("user", text)))
    assert [call.name for call in reply.tool_calls] == [name]
    assert json.loads(reply.tool_calls[0].arguments) == {"order_id": "1042", **arguments}


@pytest.mark.parametrize(
    ("tools", "text"),
    [
        ((), "where is my order 1042?"),  # no shop tools offered
        (ORDERS_TOOLS, "where is my order?"),  # no order number
        (ORDERS_TOOLS, "I paid 25.50 on 12.03"),  # numbers, but no order
    ],
)
async def test_without_tools_or_an_order_number_it_answers(
    tools: tuple[str, ...], text: str
) -> None:
    reply = await OfflineModel().complete(request("Orders", tools, ChatMessage("user", text)))
    assert reply.tool_calls == ()
    assert reply.text is not None and reply.text.startswith(f'Orders here. You said: "{text}"')


def after_call(name: str, result: str) -> tuple[ChatMessage, ...]:
    call = ToolCall("call_1", name, '{"order_id": "1042"}')
    return (
        ChatMessage("user", "where is my order 1042?"),
        ChatMessage("assistant", None, "Orders", (call,)),
        ChatMessage("tool", result, None, (), "call_1"),
    )


@pytest.mark.parametrize(
    ("name", "result", "expected"),
    [
        (
            "lookup_order",
            json.dumps(
                {
                    "order_id": "1042",
                    "status": "shipped",
                    "total": 153.0,
                    "items": [{"name": "Shoes", "quantity": 1, "price": 129.0}],
                }
            ),
            "Orders here. The order system says:\n- order id: 1042\n- status: shipped\n"
            "- total: 153.00\n- items: Shoes (quantity 1, price 129.00)",
        ),
        (
            "cancel_order",
            json.dumps({"order_id": "1042", "status": "cancelled"}),
            "Orders here. Done. The order system says:\n- order id: 1042\n- status: cancelled",
        ),
        (
            "lookup_order",
            "Error: lookup_order failed: ShopError: no order 1042: please check the number",
            "Orders here. That did not work: no order 1042: please check the number.",
        ),
        (
            "cancel_order",
            AWAITING_APPROVAL,
            "Orders here. That needs a moderator's approval first: a person on the team will "
            "look at it, and I will come back to you in this conversation.",
        ),
    ],
)
async def test_after_a_result_it_answers_from_it(name: str, result: str, expected: str) -> None:
    messages = after_call(name, result)
    reply = await OfflineModel().complete(request("Orders", ORDERS_TOOLS, *messages))
    assert reply.tool_calls == ()
    assert reply.text is not None and reply.text.startswith(expected)
    assert not tolerance.leaks(reply.text)
    assert tolerance.slip(reply.text, "Orders", ["Orders", "Returns"], messages) is None


async def test_after_a_refused_handoff_it_answers_as_before() -> None:
    messages = after_call("handoff_to_Fraud", "Error: handoff_to_Fraud is not available.")
    reply = await OfflineModel().complete(request("Orders", ORDERS_TOOLS, *messages))
    assert reply.text is not None
    assert reply.text.startswith('Orders here. You said: "where is my order 1042?".')


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        (
            approvals.approved(
                "issue_refund", '{"refund_id": "RF-1042-1", "amount": 150.0}', False
            ),
            "A person on the team approved it. Done. The order system says:\n"
            "- refund id: RF-1042-1\n- amount: 150.00",
        ),
        (
            approvals.approved(
                "issue_refund", "Error: issue_refund failed: ShopError: too much", True
            ),
            "A person on the team approved it. That did not work: too much.",
        ),
        (
            approvals.rejected("issue_refund"),
            "A person on the team did not approve that request, so it was not done.",
        ),
    ],
)
async def test_a_moderators_decision_is_told_never_routed(note: str, expected: str) -> None:
    messages = (ChatMessage("user", "please refund 150 for order 1042"), ChatMessage("user", note))
    handoffs = tuple(tool.spec for tool in SHOP.handoffs("Returns"))
    asked = request("Returns", RETURNS_TOOLS, *messages)
    reply = await OfflineModel().complete(dataclasses.replace(asked, tools=asked.tools + handoffs))
    assert reply.tool_calls == ()
    assert reply.text is not None and reply.text.startswith(f"Returns here. {expected}")


def called(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.agent, e.outcome.name) for e in events if isinstance(e, ToolCalled | ApprovalAsked)]


def said(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.agent, e.text) for e in events if isinstance(e, AgentMessage)]


async def test_a_whole_turn_looks_the_order_up() -> None:
    events, history = await run_turn(SHOP, OfflineModel(), "where is my order 1042?")
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Orders"]
    assert called(events) == [("Orders", "lookup_order")]
    ((agent, text),) = said(events)
    assert agent == "Orders" and "- status: delivered\n" in text and "- carrier: GLS\n" in text
    events, _ = await run_turn(SHOP, OfflineModel(), "thanks!", history=history, active=agent)
    assert called(events) == []
    assert said(events) == [("Orders", 'Orders here. You said: "thanks!".')]


@pytest.mark.parametrize(
    ("text", "agent", "tool", "check"),
    [
        ("please refund 50 for order 1042", "Returns", "issue_refund", ("1042", "refunded", 50)),
        (
            "return order 1042 because it is broken",
            "Returns",
            "start_return",
            (
                "1042",
                "returns",
                [
                    {
                        "rma": "RMA-1042-1",
                        "status": "label sent",
                        "reason": "it is broken",
                        "created": str(date.today()),
                    }
                ],
            ),
        ),
        ("cancel order 1050", "Orders", "cancel_order", ("1050", "status", "cancelled")),
        (
            "change the address of order 1050 to 1 Main St, 75001 Paris",
            "Orders",
            "change_address",
            ("1050", "address", "1 Main St, 75001 Paris"),
        ),
    ],
)
async def test_a_whole_turn_acts_on_the_order(
    text: str, agent: str, tool: str, check: tuple[str, str, object]
) -> None:
    events, _ = await run_turn(SHOP, OfflineModel(), text)
    assert [e.target for e in events if isinstance(e, HandoffSent)] == [agent]
    assert called(events) == [(agent, tool)]
    ((speaker, reply),) = said(events)
    assert speaker == agent and reply.startswith(f"{agent} here. Done. The order system says:")
    order_id, field, value = check
    assert shop.lookup_order(order_id)[field] == value


async def test_a_large_refund_waits_for_a_moderator() -> None:
    events, _ = await run_turn(SHOP, OfflineModel(), "please refund 150 for order 1042")
    assert called(events) == [("Returns", "issue_refund")]
    assert any(isinstance(e, ApprovalAsked) for e in events)
    ((_, reply),) = said(events)
    assert "moderator's approval" in reply
    assert shop.lookup_order("1042")["refunded"] == 0  # not run yet
