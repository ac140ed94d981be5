"""The offline demo model: deterministic routing by rare shared words, and an honest answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import HandoffSent
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


async def test_every_answer_says_what_it_is_and_how_to_use_a_real_model() -> None:
    events, _ = await run_turn(SHOP, OfflineModel(), "I want to return my order")
    text = next(e.text for e in events if type(e).__name__ == "AgentMessage")  # type: ignore[union-attr]
    assert text.startswith('Returns here. You said: "I want to return my order".')
    assert "offline demo model" in text and "OPENAI_API_KEY" in text and "OPENAI_BASE_URL" in text


async def test_a_specialist_that_has_spoken_stays_unless_another_fits_better() -> None:
    _, history = await run_turn(SHOP, OfflineModel(), "I want to return my order")
    events, history = await run_turn(
        SHOP, OfflineModel(), "Order 42", history=history, active="Returns"
    )
    assert not any(isinstance(e, HandoffSent) for e in events)
    events, _ = await run_turn(
        SHOP, OfflineModel(), "where is the delivery tracking?", history=history, active="Returns"
    )
    assert [e.target for e in events if isinstance(e, HandoffSent)] == ["Orders"]


async def test_it_is_deterministic() -> None:
    runs = [await run_turn(SHOP, OfflineModel(), "refund my broken order") for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
