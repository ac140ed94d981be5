"""Review cards in the Slack moderators' channel and their buttons, on the local Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine.loader import load_workflow
from bot.store import SessionKey, Store, sqlite_store
from bot.testing import Responder, ScriptedModel, call, say
from tests.adapters.bots import APPROVALS, SlackBot, asks_approval
from tests.fakes.slack_api import BOT_USER, SlackServer, Visible, user_message
from tests.scenario.test_approvals import REFUNDS

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
MODS = "CMOD"


@pytest.fixture
async def slack() -> AsyncIterator[SlackServer]:
    async with SlackServer() as server:
        server.members[MODS] = ["UMOD1", "UMOD2"]
        yield server


def moderated(slack: SlackServer, store: Store, model: ScriptedModel) -> SlackBot:
    """The bot with the moderators' channel and one listed moderator id."""
    return SlackBot(
        slack, store, model, moderator_channel=MODS, moderator_ids=frozenset({"ULISTED"})
    )


def escalating(respond: Responder | None = None) -> ScriptedModel:
    return ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "Return."}),
            call("handoff_to_Fraud", {"reason": "Third refund claim."}),
            say("A colleague will review this."),
        ],
        respond=respond,
    )


def card(slack: SlackServer) -> Visible:
    return next(v for v in slack.visible(MODS))


def buttons(message: Visible) -> list[str]:
    return [
        e["action_id"]
        for b in message.args["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def thread_texts(slack: SlackServer, channel: str = "C1") -> list[tuple[str, str]]:
    return [(v.username, v.text) for v in slack.visible(channel) if "working on it" not in v.text]


def ephemerals(slack: SlackServer) -> list[dict[str, Any]]:
    return [c.args for c in slack.calls if c.method == "chat.postEphemeral"]


async def escalate(slack: SlackServer) -> str:
    mention = user_message(f"<@{BOT_USER}> refund me, it never arrived", kind="app_mention")
    await slack.push(mention)
    await slack.wait_for(lambda: len(slack.visible(MODS)) == 1)
    return str(mention["ts"])


async def test_escalation_posts_a_card_for_moderators_only(
    slack: SlackServer, store: Store
) -> None:
    async with moderated(slack, store, escalating()):
        thread = await escalate(slack)
    message = card(slack)
    text = message.args["blocks"][0]["text"]["text"]
    assert "*Case #1: Fraud review (open)*" in text and "Reason: Third refund claim." in text
    assert f"https://test.slack.example/archives/C1/p{thread.replace('.', '')}" in text
    assert buttons(message) == ["case_approve", "case_reject", "case_takeover", "case_close"]
    assert "refund me, it never arrived" in str(message.args["blocks"][1])
    assert all("Case #" not in text for _, text in thread_texts(slack))


async def test_a_moderator_approves_once_and_a_second_click_is_refused(
    slack: SlackServer, store: Store
) -> None:
    async with moderated(slack, store, escalating()):
        await escalate(slack)
        await slack.click(card(slack), "case_approve", user="UMOD1")
        await slack.wait_for(
            lambda: (
                ("Moderator", "_A moderator approved this request._") in thread_texts(slack)
                and "approved" in card(slack).args["blocks"][0]["text"]["text"]
            )
        )
        assert buttons(card(slack)) == ["case_takeover", "case_close"]
        stale = {
            **card(slack).args,
            "blocks": [
                {"type": "actions", "elements": [{"action_id": "case_approve", "value": "1"}]}
            ],
        }
        await slack.click(
            Visible(card(slack).ts, MODS, None, "", "", stale), "case_approve", user="UMOD2"
        )
        await slack.wait_for(lambda: len(ephemerals(slack)) == 1)
    assert ephemerals(slack)[0]["user"] == "UMOD2"
    assert "already approved by UMOD1" in ephemerals(slack)[0]["text"]
    case = (await store.cases())[0]
    assert (case.status, case.moderator) == ("approved", "UMOD1")
    assert [a.actor for a in await store.case_actions(case.id)] == ["UMOD1"]


async def test_a_non_moderator_is_refused_privately_and_nothing_changes(
    slack: SlackServer, store: Store
) -> None:
    async with moderated(slack, store, escalating()):
        await escalate(slack)
        before = thread_texts(slack)
        await slack.click(card(slack), "case_approve", user="UNOBODY")
        await slack.wait_for(lambda: len(ephemerals(slack)) == 1)
        # A listed moderator id works without channel membership.
        await slack.click(card(slack), "case_reject", user="ULISTED")
        await slack.wait_for(lambda: len(thread_texts(slack)) == len(before) + 1)
    assert ephemerals(slack)[0] == {
        "channel": MODS,
        "user": "UNOBODY",
        "text": "Only moderators can act on review cases.",
    }
    assert thread_texts(slack)[-1] == ("Moderator", "_A moderator rejected this request._")
    assert [a.actor for a in await store.case_actions(1)] == ["ULISTED"]


async def test_take_over_silences_the_bot_and_hand_back_resumes(
    slack: SlackServer, store: Store
) -> None:
    model = escalating(lambda request: say(f"{request.agent} here, all sorted."))
    async with moderated(slack, store, model):
        thread = await escalate(slack)
        await slack.click(card(slack), "case_takeover", user="UMOD1")
        await slack.wait_for(lambda: "case_handback" in buttons(card(slack)))
        calls = model.calls
        await slack.push(user_message("Hello, anyone?", thread_ts=thread))
        await slack.push(
            user_message("Yes, Maria from support here.", thread_ts=thread, user="UMOD1")
        )
        await slack.push(user_message(f"<@{BOT_USER}> sync", channel="C2"))  # a barrier
        await slack.wait_for(lambda: len(thread_texts(slack, "C2")) == 1)
        assert model.calls == calls + 1  # only the barrier reached the model
        await slack.click(card(slack), "case_handback", user="UMOD1")
        await slack.wait_for(lambda: "handed the conversation back" in str(thread_texts(slack)))
        await slack.push(user_message("Thanks!", thread_ts=thread))
        await slack.wait_for(lambda: "Fraud here, all sorted." in str(thread_texts(slack)))
    session = await store.find_session(SessionKey("slack", "C1", thread))
    assert session is not None
    kinds = [(e.item.kind, getattr(e.item, "text", "")) for e in await store.entries(session.id)]
    assert ("user", "Hello, anyone?") in kinds
    assert ("moderator", "Yes, Maria from support here.") in kinds
    seen = [m.content for m in model.requests[-1].messages]
    assert "A moderator (a person on the support team) wrote: Yes, Maria from support here." in seen


async def test_a_case_survives_a_restart_between_escalation_and_click(
    slack: SlackServer, db_path: Path
) -> None:
    async with (
        sqlite_store(db_path) as store,
        moderated(slack, store, escalating()),
    ):
        await escalate(slack)
    async with (
        sqlite_store(db_path) as store,
        moderated(slack, store, ScriptedModel()),
    ):
        await slack.click(card(slack), "case_close", user="UMOD2")
        await slack.wait_for(
            lambda: (
                ("Moderator", "_A moderator closed this conversation._") in thread_texts(slack)
                and buttons(card(slack)) == []
            )  # the card is updated in a lane of its own
        )
        case = (await store.cases())[0]
        assert case.status == "closed"


async def test_forged_button_payloads_change_nothing(slack: SlackServer, store: Store) -> None:
    async with moderated(slack, store, escalating()):
        await escalate(slack)
        forged = {
            **card(slack).args,
            "blocks": [
                {
                    "type": "actions",
                    "elements": [
                        {"action_id": "case_close", "value": "1"},
                        {"action_id": "case_approve", "value": "999"},
                    ],
                }
            ],
        }
        message = Visible(card(slack).ts, MODS, None, "", "", forged)
        await slack.click(message, "case_close", user="UATTACKER")  # not a moderator
        await slack.click(message, "case_approve", user="UMOD1")  # a case that does not exist
        await slack.wait_for(lambda: len(ephemerals(slack)) == 2)
    assert [e["text"] for e in ephemerals(slack)] == [
        "Only moderators can act on review cases.",
        "There is no case #999.",
    ]
    case = (await store.cases())[0]
    assert case.status == "open" and await store.case_actions(case.id) == []


async def test_an_approval_card_runs_the_call_once_a_moderator_approves(
    slack: SlackServer, store: Store
) -> None:
    REFUNDS.clear()
    model = asks_approval("Your refund of 150 is on its way.")
    bot = SlackBot(slack, store, model, APPROVALS, moderator_channel=MODS)
    async with bot:
        mention = user_message(f"<@{BOT_USER}> refund 150 for order 1042", kind="app_mention")
        await slack.push(mention)
        await slack.wait_for(lambda: len(slack.visible(MODS)) == 1)
        text = card(slack).args["blocks"][0]["text"]["text"]
        assert "*Case #1: Returns asks to run refund (open)*" in text
        excerpt = card(slack).args["blocks"][1]["elements"][0]["text"]
        assert excerpt.startswith('> call: refund(order_id="1042", amount=150)\n')
        assert buttons(card(slack)) == ["case_approve", "case_reject"]
        assert REFUNDS == {}
        await slack.click(card(slack), "case_approve", user="USTRANGER")  # not a moderator
        await slack.wait_for(lambda: len(ephemerals(slack)) == 1)
        assert REFUNDS == {}
        await slack.click(card(slack), "case_approve", user="UMOD1")
        await slack.wait_for(
            lambda: ("Returns", "Your refund of 150 is on its way.") in thread_texts(slack)
        )
        await slack.wait_for(lambda: buttons(card(slack)) == [])
    assert list(REFUNDS.values()) == [150]
    assert thread_texts(slack) == [
        ("Returns", "_This needs a team member's approval; I'll come back to you here._"),
        ("Returns", "A team member must approve this refund."),
        ("Moderator", "_A moderator approved this request._"),
        ("Returns", "Your refund of 150 is on its way."),
    ]
