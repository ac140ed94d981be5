"""Review cards in the Discord moderators' channel and their buttons, on the local Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine.loader import load_workflow
from bot.store import Store, sqlite_store
from bot.testing import Responder, ScriptedModel, call, say
from tests.adapters.bots import APPROVALS, DiscordBot, asks_approval
from tests.fakes.discord_api import BOT, BOT_USER, MOD_CHANNEL, MOD_ROLE, DiscordServer, user
from tests.scenario.test_approvals import REFUNDS

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
MODERATOR = user(930000000000000001, "mod")
STRANGER = user(930000000000000002, "stranger")
MANAGE_THREADS = 1 << 34


@pytest.fixture
async def discord_server() -> AsyncIterator[DiscordServer]:
    async with DiscordServer() as server:
        yield server


def moderated(server: DiscordServer, store: Store, model: ScriptedModel) -> DiscordBot:
    """The bot with the moderators' channel and role."""
    return DiscordBot(
        server, store, model, moderator_channel=MOD_CHANNEL, moderator_role="Moderators"
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


def card(server: DiscordServer) -> dict[str, Any]:
    return next(m for m in server.cards.values() if m["channel_id"] == str(MOD_CHANNEL))


def buttons(message: dict[str, Any]) -> list[str]:
    return [
        c["custom_id"].split(":")[2] for row in message["components"] for c in row["components"]
    ]


async def stored(store: Store, kind: str, text: str) -> None:
    """Wait until the conversation's transcript holds an item (handlers run as tasks)."""
    for _ in range(500):
        for session in await store.list_sessions():
            for entry in await store.entries(session.id):
                if entry.item.kind == kind and getattr(entry.item, "text", None) == text:
                    return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never stored: {kind} {text!r}")


def thread_posts(server: DiscordServer) -> list[tuple[str, str]]:
    return [(persona, content) for persona, content, _ in server.posted()]


async def escalate(server: DiscordServer) -> str:
    mention = await server.say(f"<@{BOT}> refund me, it never arrived", mentions=[BOT_USER])
    await server.wait_for(
        lambda: any(m["channel_id"] == str(MOD_CHANNEL) for m in server.cards.values())
    )
    return str(mention["id"])


async def test_escalation_posts_a_card_for_moderators_only(
    discord_server: DiscordServer, store: Store
) -> None:
    async with moderated(discord_server, store, escalating()):
        thread = await escalate(discord_server)
    message = card(discord_server)
    embed = message["embeds"][0]
    assert embed["title"] == "Case #1: Fraud review (open)"
    assert "Reason: Third refund claim." in embed["description"]
    assert (
        "https://discord.com/channels/" in embed["description"] and thread in (embed["description"])
    )
    assert "user: refund me, it never arrived" in embed["fields"][0]["value"]
    assert buttons(message) == ["approve", "reject", "takeover", "close"]
    assert all("Case #" not in content for _, content in thread_posts(discord_server))


async def test_approve_once_then_a_stale_click_is_refused(
    discord_server: DiscordServer, store: Store
) -> None:
    async with moderated(discord_server, store, escalating()):
        await escalate(discord_server)
        card_id = card(discord_server)["id"]
        await discord_server.click(
            card_id, "switchboard:case:approve:1", clicker=MODERATOR, roles=[MOD_ROLE]
        )
        await discord_server.wait_for(
            lambda: (
                ("Moderator", "*A moderator approved this request.*")
                in thread_posts(discord_server)
            )
        )
        assert buttons(card(discord_server)) == ["takeover", "close"]
        assert "approved" in card(discord_server)["embeds"][0]["title"]
        # A second moderator's click on the stale Approve button.
        await discord_server.click(
            card_id, "switchboard:case:approve:1", clicker=STRANGER, permissions=MANAGE_THREADS
        )
        await discord_server.wait_for(lambda: len(discord_server.followups) == 1)
    assert [c["type"] for c in discord_server.callbacks] == [6, 6]  # each click acknowledged
    refusal = discord_server.followups[0]
    assert refusal["flags"] & 64 and "already approved" in refusal["content"]
    actions = await store.case_actions(1)
    assert [a.actor for a in actions] == [str(MODERATOR["id"])]


async def test_a_non_moderator_is_refused_privately(
    discord_server: DiscordServer, store: Store
) -> None:
    async with moderated(discord_server, store, escalating()):
        await escalate(discord_server)
        before = thread_posts(discord_server)
        await discord_server.click(
            card(discord_server)["id"], "switchboard:case:close:1", clicker=STRANGER
        )
        await discord_server.wait_for(lambda: len(discord_server.followups) == 1)
    assert [c["type"] for c in discord_server.callbacks] == [6]
    refusal = discord_server.followups[0]
    assert refusal["flags"] & 64
    assert refusal["content"] == "Only moderators can act on review cases."
    assert thread_posts(discord_server) == before
    assert (await store.cases())[0].status == "open"
    assert await store.case_actions(1) == []


async def test_take_over_silences_the_bot_and_hand_back_resumes(
    discord_server: DiscordServer, store: Store
) -> None:
    model = escalating(lambda request: say(f"{request.agent} here, all sorted."))
    async with moderated(discord_server, store, model):
        thread = int(await escalate(discord_server))
        card_id = card(discord_server)["id"]
        await discord_server.click(
            card_id, "switchboard:case:takeover:1", clicker=MODERATOR, roles=[MOD_ROLE]
        )
        await discord_server.wait_for(lambda: "handback" in buttons(card(discord_server)))
        calls = model.calls
        await discord_server.say("Hello, anyone?", channel=thread)
        await discord_server.say("Yes, a moderator here.", channel=thread, author=MODERATOR)
        await stored(store, "user", "Hello, anyone?")
        await stored(store, "moderator", "Yes, a moderator here.")
        await discord_server.click(
            card_id, "switchboard:case:handback:1", clicker=MODERATOR, roles=[MOD_ROLE]
        )
        await discord_server.wait_for(
            lambda: "handed the conversation back" in str(thread_posts(discord_server))
        )
        assert model.calls == calls, [(r.agent, r.messages[-1].content) for r in model.requests]
        await discord_server.say("Thanks!", channel=thread)
        await discord_server.wait_for(
            lambda: ("Fraud Review", "Fraud here, all sorted.") in thread_posts(discord_server)
        )
    session = (await store.list_sessions())[0]
    kinds = [(e.item.kind, getattr(e.item, "text", "")) for e in await store.entries(session.id)]
    assert ("user", "Hello, anyone?") in kinds
    assert ("moderator", "Yes, a moderator here.") in kinds


async def test_a_case_survives_a_restart(discord_server: DiscordServer, db_path: Path) -> None:
    async with (
        sqlite_store(db_path) as store,
        moderated(discord_server, store, escalating()),
    ):
        await escalate(discord_server)
    async with (
        sqlite_store(db_path) as store,
        moderated(discord_server, store, ScriptedModel()),
    ):
        await discord_server.click(
            card(discord_server)["id"],
            "switchboard:case:close:1",
            clicker=MODERATOR,
            permissions=MANAGE_THREADS,
        )
        await discord_server.wait_for(
            lambda: (
                ("Moderator", "*A moderator closed this conversation.*")
                in thread_posts(discord_server)
            )
        )
        assert buttons(card(discord_server)) == []
        assert (await store.cases())[0].status == "closed"


async def test_an_approval_card_runs_the_call_once_a_moderator_approves(
    discord_server: DiscordServer, store: Store
) -> None:
    REFUNDS.clear()
    model = asks_approval("Your refund of 150 is on its way.")
    bot = DiscordBot(
        discord_server,
        store,
        model,
        moderator_channel=MOD_CHANNEL,
        moderator_role="Moderators",
        workflow=APPROVALS,
    )
    async with bot:
        await discord_server.say(f"<@{BOT}> refund 150 for order 1042", mentions=[BOT_USER])
        await discord_server.wait_for(
            lambda: any(m["channel_id"] == str(MOD_CHANNEL) for m in discord_server.cards.values())
        )
        shown = card(discord_server)
        assert "Case #1: Returns asks to run refund (open)" in str(shown["embeds"])
        assert 'call: refund(order_id="1042", amount=150)' in str(shown["embeds"])
        assert buttons(shown) == ["approve", "reject"]
        await discord_server.click(
            shown["id"], "switchboard:case:approve:1", clicker=STRANGER, roles=[]
        )
        await asyncio.sleep(0.3)
        assert REFUNDS == {}
        await discord_server.click(
            shown["id"], "switchboard:case:approve:1", clicker=MODERATOR, roles=[MOD_ROLE]
        )
        await discord_server.wait_for(
            lambda: ("Returns", "Your refund of 150 is on its way.") in thread_posts(discord_server)
        )
    assert list(REFUNDS.values()) == [150]
    assert [c for _, c in thread_posts(discord_server)][-2:] == [
        "*A moderator approved this request.*",
        "Your refund of 150 is on its way.",
    ]
