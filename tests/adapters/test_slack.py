"""The Slack adapter: the real slack-bolt and slack-sdk against a local Slack on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.adapters.slack import SlackConfig, to_incoming
from bot.engine.loader import load_workflow
from bot.settings import SettingsError, load_settings
from bot.store import SessionKey, Store, sqlite_store
from bot.testing import ScriptedModel, call, say
from tests.adapters.bots import SlackBot
from tests.fakes.slack_api import BOT_ID, BOT_USER, SlackServer, user_message

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")


@pytest.fixture
async def slack() -> AsyncIterator[SlackServer]:
    async with SlackServer() as server:
        yield server


def replies(slack: SlackServer) -> list[tuple[str, str, str | None]]:
    """(username, text, thread_ts) of what the thread shows, placeholders aside."""
    return [
        (v.username, v.text, v.thread_ts) for v in slack.visible() if v.text != "_working on it…_"
    ]


def canonical() -> ScriptedModel:
    return ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "Return request."}),
            say("I can help. What is your order number?"),
            say("Order 42 is eligible; a label is on its way."),
        ]
    )


MENTION = f"<@{BOT_USER}> I want to return my order"


async def test_the_canonical_conversation_in_a_thread(slack: SlackServer, store: Store) -> None:
    async with SlackBot(slack, store, canonical()):
        mention = user_message(MENTION, kind="app_mention")
        await slack.push(mention)
        await slack.wait_for(lambda: len(replies(slack)) == 2)
        thread = mention["ts"]
        assert replies(slack) == [
            ("Returns", "Triage handed you to Returns: Return request.", thread),
            ("Returns", "I can help. What is your order number?", thread),
        ]
        handoff = next(v.args for v in slack.visible() if v.text.startswith("Triage handed"))
        assert handoff["blocks"][0]["type"] == "context"
        assert handoff["icon_emoji"] == ":package:"
        assert all(c.token == "xoxb-test" for c in slack.calls if c.method.startswith("chat."))

        # A follow-up without a mention, in the thread: same conversation, last agent.
        await slack.push(user_message("Order 42", thread_ts=thread))
        await slack.wait_for(lambda: len(replies(slack)) == 3)
        assert replies(slack)[-1] == (
            "Returns",
            "Order 42 is eligible; a label is on its way.",
            thread,
        )
    assert len(slack.acks) == 2
    session = await store.find_session(SessionKey("slack", "C1", thread))
    assert session is not None and session.active_agent == "Returns"


async def test_one_answer_for_a_mention_delivered_twice_and_retried(
    slack: SlackServer, store: Store
) -> None:
    model = ScriptedModel(respond=lambda request: say("Hello!"))
    async with SlackBot(slack, store, model):
        mention = user_message(MENTION, kind="app_mention")
        as_message = {**mention, "type": "message"}
        await slack.push(mention, event_id="EvA")
        await slack.push(as_message, event_id="EvB")  # the same mention as a message event
        await slack.push(mention, event_id="EvA", retry=1)  # Slack's retry
        await slack.wait_for(lambda: len(slack.acks) == 3)
        await slack.wait_for(lambda: len(replies(slack)) >= 1)
        await slack.push(user_message("sync", thread_ts=mention["ts"]))
        await slack.wait_for(lambda: len(replies(slack)) == 2)
    assert [text for _, text, _ in replies(slack)] == ["Hello!", "Hello!"]
    assert model.calls == 2


async def test_messages_the_bot_must_ignore(slack: SlackServer, store: Store) -> None:
    model = ScriptedModel(respond=lambda request: say("Hi"))
    async with SlackBot(slack, store, model):
        await slack.push(user_message("chatter in the channel"))
        await slack.push(user_message("reply in a thread we do not own", thread_ts="1.000001"))
        await slack.push(user_message("from a bot", thread_ts="1.000001", bot_id="B9"))
        await slack.push(user_message("our own persona post", bot_id=BOT_ID))
        await slack.push(user_message("edited", subtype="message_changed"))
        await slack.push(user_message("joined", subtype="channel_join"))
        # Then one real mention, to know the ones before were processed and dropped.
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: len(replies(slack)) == 1)
    assert model.calls == 1
    assert len(slack.acks) == 7


async def test_a_mention_inside_an_existing_thread_starts_there(
    slack: SlackServer, store: Store
) -> None:
    async with SlackBot(slack, store, ScriptedModel([say("Hi there")])):
        await slack.push(user_message(f"<@{BOT_USER}> help", thread_ts="1700000000.999999"))
        await slack.wait_for(lambda: len(replies(slack)) == 1)
    assert replies(slack) == [("Triage", "Hi there", "1700000000.999999")]


async def test_a_direct_message_is_a_conversation(slack: SlackServer, store: Store) -> None:
    async with SlackBot(slack, store, ScriptedModel([say("Hello in private")])):
        await slack.push(user_message("hi", channel="D1", channel_type="im"))
        await slack.wait_for(lambda: len(replies(slack)) == 1)
    assert replies(slack) == [("Triage", "Hello in private", None)]


async def test_model_text_cannot_ping_anyone(slack: SlackServer, store: Store) -> None:
    hostile = "<!channel> <!here> <!everyone> hey <@U123>, see <https://x.example|this>"
    async with SlackBot(slack, store, ScriptedModel([say(hostile)])):
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: len(replies(slack)) == 1)
    text = replies(slack)[0][1]
    assert "<" not in text and ">" not in text
    assert text.startswith("&lt;!channel&gt; &lt;!here&gt;")
    assert all("link_names" not in c.args and "parse" not in c.args for c in slack.calls)


async def test_a_long_reply_is_cut_to_its_bound_and_split_in_order(
    slack: SlackServer, store: Store
) -> None:
    words = [f"w{i:05d}" for i in range(1500)]  # 10,499 characters: over the 8,000 bound
    async with SlackBot(slack, store, ScriptedModel([say(" ".join(words))])):
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: len(replies(slack)) >= 3)
    texts = [text for _, text, _ in replies(slack)]
    assert len(texts) == 3 and all(len(t) <= 3900 for t in texts)
    said = " ".join(texts)
    assert said.endswith("…(the reply was cut at 8,000 characters)")
    kept = said.removesuffix(" …(the reply was cut at 8,000 characters)").split()
    assert kept == words[: len(kept)] and 1100 < len(kept) < 1150


async def test_a_429_on_post_message_is_retried(slack: SlackServer, store: Store) -> None:
    slack.rate_limit(2)
    async with SlackBot(slack, store, ScriptedModel([say("Eventually")])):
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: len(replies(slack)) == 1, within=15)
    assert [text for _, text, _ in replies(slack)] == ["Eventually"]
    refused = [c for c in slack.posts() if c.ts is None]
    assert len(refused) == 2 and refused[0].args == slack.posts()[-1].args


async def test_a_slow_turn_shows_a_placeholder_that_the_reply_replaces(
    slack: SlackServer, store: Store
) -> None:
    async with SlackBot(slack, store, ScriptedModel([say("Done thinking")], latency=0.3)):
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: any(c.method == "chat.update" for c in slack.calls))
    placeholder = slack.posts()[0].args
    assert (placeholder["username"], placeholder["text"]) == ("Triage", "_working on it…_")
    update = next(c.args for c in slack.calls if c.method == "chat.update")
    assert update["text"] == "Done thinking"


async def test_a_handoff_replaces_the_placeholder_with_the_new_persona(
    slack: SlackServer, store: Store
) -> None:
    async with SlackBot(slack, store, canonical()):
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: len(replies(slack)) == 2)
    chat = [c for c in slack.calls if c.method.startswith("chat.")]
    assert [c.method for c in chat] == [
        "chat.postMessage",  # Triage is working on it
        "chat.delete",  # Triage hands over: its placeholder goes
        "chat.postMessage",  # the handoff notice, as Returns
        "chat.postMessage",  # Returns is working on it
        "chat.update",  # ... and its reply replaces that placeholder, in place
    ]
    assert [c.args.get("username") for c in chat if c.method == "chat.postMessage"] == [
        "Triage",
        "Returns",
        "Returns",
    ]


async def test_end_closes_and_a_new_mention_starts_afresh(slack: SlackServer, store: Store) -> None:
    model = ScriptedModel(respond=lambda request: say(f"{request.agent} here"))
    async with SlackBot(slack, store, model):
        mention = user_message(MENTION, kind="app_mention")
        thread = mention["ts"]
        await slack.push(mention)
        await slack.wait_for(lambda: len(replies(slack)) == 1)
        await slack.push(user_message("end", thread_ts=thread))
        await slack.wait_for(lambda: len(replies(slack)) == 2)
        await slack.push(user_message("anyone?", thread_ts=thread))  # closed: ignored
        await slack.push(user_message(f"<@{BOT_USER}> new question", thread_ts=thread))
        await slack.wait_for(lambda: len(replies(slack)) == 3)
    assert [text for _, text, _ in replies(slack)] == [
        "Triage here",
        "_Conversation ended. Your next message to me starts a new one._",
        "Triage here",
    ]
    assert model.calls == 2


@pytest.mark.parametrize("retry", [False, True])
async def test_the_end_pair_and_its_retry_close_once_and_open_nothing(
    slack: SlackServer, store: Store, retry: bool
) -> None:
    """One "@bot end" in a thread arrives as `app_mention` and as `message` (one `ts`), and a
    retry may repeat it: one "ended" reply, and no new conversation about "end"."""
    model = ScriptedModel(respond=lambda request: say(f"{request.agent} here"))
    async with SlackBot(slack, store, model):
        mention = user_message(MENTION, kind="app_mention")
        thread = mention["ts"]
        await slack.push(mention)
        await slack.wait_for(lambda: len(replies(slack)) == 1)
        end = user_message(f"<@{BOT_USER}> end", thread_ts=thread, kind="app_mention")
        await slack.push(end, event_id="Ev-end-1")
        await slack.push({**end, "type": "message"}, event_id="Ev-end-2")
        if retry:
            await slack.push(end, event_id="Ev-end-1", retry=1)
        await slack.wait_for(lambda: len(replies(slack)) == 2)
        await asyncio.sleep(0.3)  # time for a wrong third reply to show
    assert [text for _, text, _ in replies(slack)] == [
        "Triage here",
        "_Conversation ended. Your next message to me starts a new one._",
    ]
    assert model.calls == 1
    assert [s.status for s in await store.find_thread(thread)] == ["closed"]


def test_translation_strips_the_bot_mention_and_keys_on_channel_and_ts() -> None:
    event = user_message(f"<@{BOT_USER}> hi <@U2>", kind="app_mention")
    incoming = to_incoming(event, BOT_USER)
    assert incoming is not None
    assert (incoming.text, incoming.thread, incoming.mentioned) == ("hi <@U2>", event["ts"], True)
    assert incoming.event_id == f"C1:{event['ts']}"
    assert to_incoming({**event, "type": "message"}, BOT_USER) == incoming


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SLACK_BOT_TOKEN is missing"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "should start with xoxb-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "should start with xapp-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "set SLACK_APP_TOKEN for Socket Mode, or SLACK_SIGNING"),
    ],
)
def test_bad_configuration_is_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        SlackConfig.from_settings(load_settings(env, env_file=None))
    assert "\n" not in str(caught.value)
    for value in env.values():
        assert value not in str(caught.value)


# The bot scopes each Web API method the adapter calls needs (api.slack.com/methods/...).
METHOD_SCOPES = {
    "auth_test": set(),
    "chat_postMessage": {"chat:write", "chat:write.customize"},  # under each agent's persona
    "chat_update": {"chat:write"},
    "chat_delete": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_getPermalink": set(),
    "conversations_replies": {"channels:history", "groups:history", "im:history"},
    "conversations_history": {"channels:history", "groups:history", "im:history"},
    "conversations_members": {"channels:read", "groups:read"},
}


def test_the_manifest_asks_for_what_the_adapter_uses() -> None:
    import re

    import yaml

    root = Path(__file__).parents[2]
    source = "".join(p.read_text() for p in (root / "bot" / "adapters").glob("slack*.py"))
    called = set(re.findall(r"\.((?:chat|conversations|users|auth|views|reactions)_\w+)\(", source))
    assert called, "no Web API call found: the pattern is out of date"
    unknown = called - set(METHOD_SCOPES)
    assert not unknown, f"add the scopes of {unknown} to METHOD_SCOPES and the manifest"
    manifest = yaml.safe_load((root / "deploy" / "slack-manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    needed = set().union(*(METHOD_SCOPES[m] for m in called)) | {"app_mentions:read"}
    needed |= {"metadata.message:read"}  # the marks each post carries, read back after a crash
    assert needed <= scopes, needed - scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "message.groups", "message.im"} <= events
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True  # the case buttons
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True  # direct messages
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is False


async def test_a_mention_with_no_text_gets_a_short_reply(slack: SlackServer, store: Store) -> None:
    model = ScriptedModel([say("barrier")])
    async with SlackBot(slack, store, model):
        only_mention = user_message(f"<@{BOT_USER}>", kind="app_mention")
        await slack.push(only_mention)
        await slack.push({**only_mention, "type": "message"})  # the pair Slack always sends
        await slack.push(user_message("", kind="message", subtype="file_share", thread_ts="9.1"))
        await slack.wait_for(lambda: len(slack.acks) == 3)
        await slack.push(user_message(f"<@{BOT_USER}> sync", channel="C9", kind="app_mention"))
        await slack.wait_for(
            lambda: ("Triage", "barrier", None) in [(u, t, None) for u, t, _ in replies(slack)]
        )
    texts = [text for _, text, _ in replies(slack)]
    assert texts.count("_I didn't get any text there. Could you type your question?_") == 1
    assert model.calls == 1


async def test_a_store_failure_gets_an_honest_reply(slack: SlackServer, db_path: Path) -> None:
    store = sqlite_store(db_path)
    await store.open()
    async with SlackBot(slack, store, ScriptedModel([say("never")])):
        await store.close()  # the database goes away under the running bot
        await slack.push(user_message(MENTION, kind="app_mention"))
        await slack.wait_for(lambda: len(replies(slack)) == 1)
    assert replies(slack)[0][1] == (
        "_I'm sorry, I can't reach my conversation store right now, so I can't answer safely. "
        "Please try again in a few minutes._"
    )
