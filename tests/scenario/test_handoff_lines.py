"""What the customer sees of a handoff: persona names, a neutral line for a review, never the
reason a model gave for escalating (that is for moderators), or a line the workflow chooses."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import Agent, HandoffBuilder, Persona, Workflow
from bot.engine.loader import load_workflow
from bot.service import ConversationService, IncomingMessage
from bot.store import Store
from bot.testing import ScriptedModel, call, say

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
REASON = "Third refund claim this month; likely abuse."


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("test", "C1", "t1", text)


async def test_an_escalation_is_discreet_and_its_reason_reaches_only_moderators(
    store: Store,
) -> None:
    model = ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "A return."}),
            call("handoff_to_Fraud", {"reason": REASON}),
            say("Could you send a photo of the parcel?"),
        ]
    )
    result = await ConversationService(SHOP, model, store).handle(msg("refund, it never came"))
    assert [(p.kind, p.persona.name, p.text) for p in result.posts] == [
        ("handoff", "Returns", "Triage handed you to Returns: A return."),
        ("handoff", "Fraud Review", "A specialist will look at this with you."),
        ("reply", "Fraud Review", "Could you send a photo of the parcel?"),
    ]
    assert all(REASON not in post.text for post in result.posts)
    assert [case.reason for case in result.cases] == [REASON]  # on the moderators' card


def shop(notice: str | None) -> Workflow:
    triage = Agent("Triage", "Route.", persona=Persona("Front Desk"))
    billing = Agent("Billing", "Bill.", persona=Persona("Accounts"), handoff_notice=notice)
    flow = HandoffBuilder(participants=[triage, billing]).with_start_agent(triage)
    return flow.add_handoff(triage, [billing]).build()


@pytest.mark.parametrize(
    ("notice", "lines"),
    [
        (None, ["Front Desk handed you to Accounts: invoice"]),  # persona names
        ("", []),  # nothing at all
        ("Accounts will take it from here.", ["Accounts will take it from here."]),
    ],
)
async def test_the_workflow_says_what_a_handoff_shows(
    store: Store, notice: str | None, lines: list[str]
) -> None:
    model = ScriptedModel([call("handoff_to_Billing", {"reason": "invoice"}), say("Sure.")])
    service = ConversationService(shop(notice), model, store)
    result = await service.handle(msg("my invoice"))
    assert [p.text for p in result.posts if p.kind == "handoff"] == lines
    assert result.posts[-1].text == "Sure."
