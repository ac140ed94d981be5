"""The offline demo model: deterministic routing by rare shared words, and an honest answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import AgentMessage, AwaitingUser, HandoffSent, Item
from bot.engine.loader import load_workflow
from bot.models import OfflineModel
from tests.helpers import run_turn

WORKFLOWS = Path(__file__).parents[2] / "workflows"
SHOP = load_workflow(WORKFLOWS / "ecommerce.yaml")


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
