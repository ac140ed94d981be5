"""Real `python -m bot` processes against the local Slack and Discord: a post refused for good,
cards that fail or are cut short by a crash, a 5 MB completion, clicks (late, replayed,
malformed), one webhook per channel."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from benchmarks.crash import _free_port
from tests.fakes.chat_completions import ChatCompletionsServer, Delay, Reply, Step, canonical
from tests.fakes.discord_api import BOT, BOT_USER, MOD_CHANNEL, TOKEN, DiscordServer, user
from tests.fakes.slack_api import BOT_USER as SLACK_BOT
from tests.fakes.slack_api import SlackServer, event_callback, sign, user_message
from tests.processes import bot, clean_env, started, stop

WORKING = "_working on it…_"
SECRET = "refusal-secret"
MODS = "CMOD"


def replies(slack: SlackServer, thread: str) -> list[str]:
    return [v.text for v in slack.visible("C1") if v.thread_ts == thread and v.text != WORKING]


def slack_env(
    slack: SlackServer, chat: ChatCompletionsServer, db: Path, **extra: str
) -> dict[str, str]:
    return clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        SLACK_API_URL=slack.api_url,
        SLACK_MODERATOR_CHANNEL=MODS,
        OPENAI_BASE_URL=chat.base_url,
        OPENAI_MAX_RETRIES="0",
        BOT_DATABASE=str(db),
        BOT_SWEEP_S="0.2",
        BOT_OUTBOX_RETRY_S="0.2",
        **extra,
    )


async def slack_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await bot("slack", env=env)
    await started(process, "Slack: connected")
    return process


async def command(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await bot(*args, env=env)
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


def echo(body: dict[str, object]) -> Step:
    messages = body["messages"]
    assert isinstance(messages, list)
    return Reply("echo " + next(m["content"] for m in reversed(messages) if m["role"] == "user"))


async def test_a_post_refused_for_good_is_set_aside_and_the_thread_goes_on(tmp_path: Path) -> None:
    async with SlackServer() as slack, ChatCompletionsServer(respond=echo) as chat:
        slack.refuse_text = "POISON"  # say, a message Slack finds too long, in any form
        env = slack_env(slack, chat, tmp_path / "s.db")
        process = await slack_bot(env)
        try:
            opening = user_message(f"<@{SLACK_BOT}> POISON please", kind="app_mention")
            thread = str(opening["ts"])
            await slack.push(opening)
            await slack.push(user_message("and now?", thread_ts=thread))
            await slack.wait_for(lambda: "echo and now?" in replies(slack, thread), within=20)
        finally:
            await stop(process)
        refused = [
            c for c in slack.posts() if "POISON" in str(c.args.get("text"))
        ]  # (the placeholder's update was refused first)
        assert len(refused) == 2  # as it was, then once more as plain text: then set aside
        assert replies(slack, thread) == [
            "_I'm sorry, one of my messages could not be shown here._",
            "echo and now?",
        ]
        code, out = await command("dead-letters", env=env)
        assert code == 0 and "reply" in out and "msg_too_long" in out and "POISON" not in out
        code, out = await command("dead-letters", "--text", env=env)
        assert "echo POISON please" in out
        code, out = await command("doctor", env=env | {"SLACK_API_URL": slack.api_url})
        assert code == 1 and "FAIL  outbox: 1 post(s) refused by the platform for good" in out


async def test_a_card_survives_a_500_and_a_crash_while_it_is_posted(tmp_path: Path) -> None:
    async with SlackServer() as slack, ChatCompletionsServer(respond=canonical) as chat:
        env = slack_env(slack, chat, tmp_path / "s.db")
        slack.fail_channel[MODS] = 1  # the first card post fails with a 500
        slack.accept_then_hang = "Case #2"  # the second is posted, but its answer never comes
        process = await slack_bot(env)
        try:
            for number in (1, 2):
                opening = user_message(f"<@{SLACK_BOT}> return it {number}", kind="app_mention")
                await slack.push(opening)
                await slack.push(user_message("it never arrived", thread_ts=str(opening["ts"])))
                await slack.wait_for(
                    lambda n=number: any(f"Case #{n}" in v.text for v in slack.visible(MODS)),
                    within=20,
                )
            await asyncio.sleep(0.3)
            os.kill(process.pid, signal.SIGKILL)  # while the second card's post hangs
            await process.wait()
            process = await slack_bot(env)
            await asyncio.sleep(1.5)  # the restart looks the card up instead of posting it again
        finally:
            await stop(process)
    cards = [v for v in slack.visible(MODS)]
    assert sorted(v.text for v in cards) == [
        "Case #1: Fraud review (open)",
        "Case #2: Fraud review (open)",
    ]


async def test_a_5_mb_completion_is_cut_to_a_few_posts(tmp_path: Path) -> None:
    huge = "lorem ipsum " * (5_000_000 // 12)
    async with SlackServer() as slack, ChatCompletionsServer(respond=lambda b: Reply(huge)) as chat:
        env = slack_env(slack, chat, tmp_path / "s.db")
        process = await slack_bot(env)
        try:
            opening = user_message(f"<@{SLACK_BOT}> tell me everything", kind="app_mention")
            await slack.push(opening)
            await slack.wait_for(
                lambda: any("cut at 8,000" in t for t in replies(slack, str(opening["ts"]))),
                within=30,
            )
        finally:
            await stop(process)
    posts = replies(slack, str(opening["ts"]))
    assert 2 <= len(posts) <= 3
    assert posts[-1].endswith("…(the reply was cut at 8,000 characters)")
    assert (tmp_path / "s.db").stat().st_size < 1_000_000


async def http_bot(
    slack: SlackServer, chat: ChatCompletionsServer, db: Path
) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_port()
    env = clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_MODERATOR_IDS="UMOD",
        SLACK_MODERATOR_CHANNEL=MODS,
        PORT=str(port),
        OPENAI_BASE_URL=chat.base_url,
        BOT_DATABASE=str(db),
    )
    process = await bot("slack", env=env)
    await started(process, "Slack: listening")
    return process, port


async def post_raw(port: int, body: bytes, content_type: str) -> int:
    headers = {**sign(SECRET, body), "Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers) as reply,
    ):
        return reply.status


async def test_a_replayed_click_counts_once_and_malformed_bodies_get_400(tmp_path: Path) -> None:
    async with SlackServer() as slack, ChatCompletionsServer(respond=canonical) as chat:
        process, port = await http_bot(slack, chat, tmp_path / "s.db")
        try:
            opening = user_message(f"<@{SLACK_BOT}> return it", kind="app_mention")
            thread = str(opening["ts"])
            for event in (opening, user_message("it never arrived", thread_ts=thread)):
                body = json.dumps(event_callback(event)).encode()
                assert await post_raw(port, body, "application/json") == 200
                await asyncio.sleep(0.5)
            await slack.wait_for(lambda: len(slack.visible(MODS)) == 1, within=20)
            card = slack.visible(MODS)[0]

            def click(action: str, action_ts: str) -> bytes:
                button = {"action_id": f"case_{action}", "value": "1", "action_ts": action_ts}
                payload = {
                    "type": "block_actions",
                    "user": {"id": "UMOD"},
                    "channel": {"id": MODS},
                    "message": {"ts": card.ts},
                    "actions": [button],
                    "team": {"id": "T1"},
                }
                return f"payload={json.dumps(payload)}".encode()

            form = "application/x-www-form-urlencoded"
            take_over = click("takeover", "1700000100.000001")
            assert await post_raw(port, take_over, form) == 200
            await slack.wait_for(lambda: "Hand back" in json.dumps(slack.visible(MODS)[0].args))
            assert await post_raw(port, click("handback", "1700000100.000002"), form) == 200
            await slack.wait_for(lambda: "Take over" in json.dumps(slack.visible(MODS)[0].args))
            assert await post_raw(port, take_over, form) == 200  # the same signed click, replayed
            await asyncio.sleep(1.0)
            assert (
                await post_raw(port, b'{"type": "event_callback", oops', "application/json") == 400
            )
            assert await post_raw(port, b"payload=%7Bnot-json", form) == 400
            assert (
                await post_raw(
                    port,
                    b"payload="
                    + json.dumps(
                        {
                            "type": "block_actions",
                            "user": {"id": "UMOD"},
                            "channel": {"id": MODS},
                            "actions": [
                                {"action_id": "case_close", "value": "1; DROP", "action_ts": "1.3"}
                            ],
                        }
                    ).encode(),
                    form,
                )
                == 200
            )
            await asyncio.sleep(0.5)
        finally:
            err = await stop(process)
        assert "Traceback" not in err
    announcements = [t for t in replies(slack, thread) if "moderator" in t.lower()]
    assert len([t for t in announcements if "joined" in t]) == 1  # the replay changed nothing
    ephemeral = [c.args["text"] for c in slack.calls if c.method == "chat.postEphemeral"]
    assert "That click was already taken into account." in ephemeral
    assert "There is no case #1; DROP." in ephemeral


def slow_echo(seconds: float) -> Callable[[dict[str, object]], Step]:
    def respond(body: dict[str, object]) -> Step:
        reply = canonical(body)
        messages = body["messages"]
        assert isinstance(messages, list)
        if "slow" in str(messages[-1].get("content")):
            return Delay(seconds, Reply("Thanks, noted."))
        return reply

    return respond


@pytest.fixture
async def discord_server() -> AsyncIterator[DiscordServer]:
    async with DiscordServer() as server:
        yield server


async def test_a_click_during_a_long_turn_is_acknowledged_at_once(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    moderator = user(930000000000000001, "mod")
    async with ChatCompletionsServer(respond=slow_echo(5.0)) as chat:
        env = clean_env(
            DISCORD_TOKEN=TOKEN,
            DISCORD_API_URL=discord_server.api_url,
            DISCORD_GATEWAY_URL=discord_server.gateway_url,
            DISCORD_MODERATOR_CHANNEL=str(MOD_CHANNEL),
            OPENAI_BASE_URL=chat.base_url,
            BOT_DATABASE=str(tmp_path / "d.db"),
        )
        process = await bot("discord", env=env)
        await started(process, "Discord: connected")
        try:
            mention = await discord_server.say(f"<@{BOT}> return it", mentions=[BOT_USER])
            thread = int(mention["id"])
            await discord_server.wait_for(lambda: len(discord_server.posted()) == 2, within=20)
            await discord_server.say("it never arrived", channel=thread)
            await discord_server.wait_for(
                lambda: any(
                    m["channel_id"] == str(MOD_CHANNEL) for m in discord_server.cards.values()
                ),
                within=20,
            )
            card = next(
                m for m in discord_server.cards.values() if m["channel_id"] == str(MOD_CHANNEL)
            )
            await discord_server.say("slow one, please", channel=thread)  # a 5-second turn
            await asyncio.sleep(0.5)
            await discord_server.click(
                card["id"], "switchboard:case:takeover:1", clicker=moderator, permissions=1 << 34
            )
            clicked = max(discord_server.clicked_at.values())
            await discord_server.wait_for(lambda: len(discord_server.callbacks) == 1, within=10)
            assert discord_server.callbacks[0]["at"] - clicked < 3.0  # Discord's deadline
            assert discord_server.callbacks[0]["type"] == 6
            await discord_server.wait_for(
                lambda: "handback" in json.dumps(discord_server.cards[card["id"]]["components"]),
                within=20,
            )
        finally:
            await stop(process)
    assert len(discord_server.webhooks) == 1


async def test_concurrent_threads_in_a_channel_share_one_webhook(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    def together(body: dict[str, object]) -> Step:
        return Delay(0.5, canonical(body))  # the turns overlap, and post at about one moment

    async with ChatCompletionsServer(respond=together) as chat:
        env = clean_env(
            DISCORD_TOKEN=TOKEN,
            DISCORD_API_URL=discord_server.api_url,
            DISCORD_GATEWAY_URL=discord_server.gateway_url,
            OPENAI_BASE_URL=chat.base_url,
            BOT_DATABASE=str(tmp_path / "d.db"),
        )
        discord_server.webhook_delay = 0.3
        process = await bot("discord", env=env)
        await started(process, "Discord: connected")
        try:
            await asyncio.gather(
                *(
                    discord_server.say(f"<@{BOT}> return number {n}", mentions=[BOT_USER])
                    for n in range(8)
                )
            )
            await discord_server.wait_for(lambda: len(discord_server.posted()) == 16, within=30)
        finally:
            await stop(process)
    assert len(discord_server.webhooks) == 1  # eight turns at once, one webhook made
