"""The Discord adapter: the real discord.py client against a local Discord on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.adapters.discord import display_name, thread_name
from bot.engine import Persona
from bot.engine.loader import load_workflow
from bot.store import SessionKey, Store, sqlite_store
from bot.testing import ScriptedModel, call, say
from tests.adapters.bots import DiscordBot
from tests.fakes.discord_api import BOT, BOT_USER, CHANNEL, GUILD, OTHER_BOT, DiscordServer, user

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")


@pytest.fixture
async def discord_server() -> AsyncIterator[DiscordServer]:
    async with DiscordServer() as server:
        yield server


def posts(server: DiscordServer) -> list[tuple[str, str, str]]:
    """(persona, content, thread id) of every webhook post as it reads now."""
    return server.posted()


MENTION = f"<@{BOT}> I want to return my order"


def canonical() -> ScriptedModel:
    return ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "Return request."}),
            say("I can help. What is your order number?"),
            say("Order 42 is eligible; a label is on its way."),
        ]
    )


async def test_the_canonical_conversation(discord_server: DiscordServer, store: Store) -> None:
    async with DiscordBot(discord_server, store, canonical()):
        mention = await discord_server.say(MENTION, mentions=[BOT_USER])
        thread = mention["id"]
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 2)
        assert discord_server.threads[int(thread)]["name"] == "I want to return my order"
        assert posts(discord_server) == [
            ("Returns", "-# ↪ Triage handed you to Returns: Return request.", thread),
            ("Returns", "I can help. What is your order number?", thread),
        ]
        # A follow-up in the thread, no mention: the last agent answers.
        await discord_server.say("Order 42", channel=int(thread))
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 3)
    assert posts(discord_server)[-1] == (
        "Returns",
        "Order 42 is eligible; a label is on its way.",
        thread,
    )
    sent = [*discord_server.executions, *discord_server.edits]
    assert all(e["allowed_mentions"] == {"parse": []} for e in sent)
    assert all(e["wait"] == "1" for e in discord_server.executions)
    assert len(discord_server.webhooks) == 1  # one webhook for the channel, reused
    typing = [r for r in discord_server.requests if r.path.endswith("/typing")]
    assert typing and typing[0].path == f"/channels/{thread}/typing"
    assert discord_server.intents & (1 << 15)  # message content
    session = await store.find_session(SessionKey("discord", str(GUILD), thread))
    assert session is not None and session.active_agent == "Returns"


async def test_messages_the_bot_must_ignore(discord_server: DiscordServer, store: Store) -> None:
    model = ScriptedModel(respond=lambda request: say("Hi"))
    async with DiscordBot(discord_server, store, model):
        await discord_server.say("just chatting")  # no mention, in the channel
        await discord_server.say("in a thread we do not own", channel=912345678901234567)
        await discord_server.say(
            "from a bot", author=user(OTHER_BOT, "otherbot", bot=True), mentions=[BOT_USER]
        )
        await discord_server.say(
            "our own webhook post", mentions=[BOT_USER], webhook_id="913000000000000000"
        )
        await discord_server.say("@everyone look", mention_everyone=True)
        await discord_server.say(MENTION, mentions=[BOT_USER])
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 1)
    assert model.calls == 1
    assert len(discord_server.threads) == 1


async def test_model_text_cannot_ping(discord_server: DiscordServer, store: Store) -> None:
    hostile = "@everyone @here <@&1234> <@5678> read this"
    async with DiscordBot(discord_server, store, ScriptedModel([say(hostile)])):
        await discord_server.say(MENTION, mentions=[BOT_USER])
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 1)
    assert posts(discord_server)[0][1] == hostile
    sent = [*discord_server.executions, *discord_server.edits]
    assert sent and all(e["allowed_mentions"] == {"parse": []} for e in sent)


async def test_a_5000_character_reply_is_split_in_order(
    discord_server: DiscordServer, store: Store
) -> None:
    words = [f"w{i:04d}" for i in range(1000)]  # 5,999 characters
    async with DiscordBot(discord_server, store, ScriptedModel([say(" ".join(words))])):
        await discord_server.say(MENTION, mentions=[BOT_USER])
        await discord_server.wait_for(lambda: "w0999" in str(posts(discord_server)))
    contents = [content for _, content, _ in posts(discord_server)]
    assert len(contents) == 4
    assert all(len(c) <= 2000 for c in contents)
    assert " ".join(contents).split() == words


async def test_end_closes_and_a_new_mention_starts_afresh(
    discord_server: DiscordServer, store: Store
) -> None:
    model = ScriptedModel(respond=lambda request: say(f"{request.agent} here"))
    async with DiscordBot(discord_server, store, model):
        mention = await discord_server.say(MENTION, mentions=[BOT_USER])
        thread = int(mention["id"])
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 1)
        await discord_server.say("end", channel=thread)
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 2)
        await discord_server.say("hello?", channel=thread)  # closed: ignored
        await discord_server.say(f"<@{BOT}> new question", channel=thread, mentions=[BOT_USER])
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 3)
    assert [(username, content) for username, content, _ in posts(discord_server)] == [
        ("Triage", "Triage here"),
        ("Triage", "*Conversation ended. Your next message to me starts a new one.*"),
        ("Triage", "Triage here"),
    ]


@pytest.mark.parametrize(
    ("persona", "name"),
    [
        ("Returns", "Returns"),
        ("Discord Helper", "Helper"),
        ("everyone", "Assistant"),
        ("discord", "Assistant"),
        ("x" * 100, "x" * 80),
    ],
)
def test_webhook_names_discord_accepts(persona: str, name: str) -> None:
    assert display_name(Persona(persona)) == name


def test_thread_names_come_from_the_first_words() -> None:
    assert thread_name("  I want   to return my order ") == "I want to return my order"
    assert len(thread_name("word " * 100)) <= 80
    assert thread_name("") == "Support"


def test_channel_constant_is_a_text_channel() -> None:
    assert CHANNEL != GUILD


async def test_a_direct_message_is_a_conversation(
    discord_server: DiscordServer, store: Store
) -> None:
    dm = 920000000000000001
    model = ScriptedModel(
        [call("handoff_to_Returns", {"reason": "Return."}), say("Which order?"), say("Noted.")]
    )
    async with DiscordBot(discord_server, store, model):
        await discord_server.say("I want to return my order", channel=dm, guild_id=None)
        await discord_server.wait_for(lambda: len(discord_server.messages) == 2)
        await discord_server.say("Order 42", channel=dm, guild_id=None)
        await discord_server.wait_for(lambda: len(discord_server.messages) == 3)
    assert [(m["channel_id"], m["content"]) for m in discord_server.messages] == [
        (str(dm), "-# ↪ Triage handed you to Returns: Return."),
        (str(dm), "**Returns**: Which order?"),
        (str(dm), "**Returns**: Noted."),
    ]
    assert all(m["allowed_mentions"] == {"parse": []} for m in discord_server.messages)
    assert discord_server.threads == {}


async def test_a_store_failure_gets_an_honest_reply(
    discord_server: DiscordServer, db_path: Path
) -> None:
    store = sqlite_store(db_path)
    await store.open()
    async with DiscordBot(discord_server, store, ScriptedModel([say("never")])):
        await store.close()  # the database goes away under the running bot
        await discord_server.say(MENTION, mentions=[BOT_USER])
        await discord_server.wait_for(lambda: len(posts(discord_server)) == 1)
    assert posts(discord_server)[0][1] == (
        "*I'm sorry, I can't reach my conversation store right now, so I can't answer safely. "
        "Please try again in a few minutes.*"
    )
