"""Fault suite on real processes: `python -m bot slack` against local Slack and model servers."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.chat_completions import ChatCompletionsServer, Delay, Fail, Reply, canonical
from tests.fakes.slack_api import BOT_USER, SlackServer, user_message
from tests.processes import bot, clean_env, started

WORKING = "_working on it…_"
REPLY = "I can help with that. What is your order number?"


@pytest.fixture
async def slack() -> AsyncIterator[SlackServer]:
    async with SlackServer() as server:
        yield server


async def start_bot(
    slack: SlackServer, chat: ChatCompletionsServer, db: Path, **extra: str
) -> asyncio.subprocess.Process:
    env = clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        SLACK_API_URL=slack.api_url,
        SLACK_MODERATOR_CHANNEL="CMOD",
        OPENAI_BASE_URL=chat.base_url,
        OPENAI_MAX_RETRIES="0",
        BOT_DATABASE=str(db),
        BOT_OUTBOX_RETRY_S="0.1",
        **extra,
    )
    process = await bot("slack", env=env)
    await started(process, "Slack: connected over Socket Mode.")
    await slack.connected()
    return process


def shown(slack: SlackServer) -> list[str]:
    return [v.text for v in slack.visible("C1") if v.text != WORKING]


def transcript(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT kind, body FROM items ORDER BY session_id, seq").fetchall()
    return [(kind, body) for kind, body in rows]


async def test_kill_9_between_the_model_reply_and_the_post(
    slack: SlackServer, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    slack.hang_text = REPLY  # the reply's post never completes while the first process lives
    async with ChatCompletionsServer(respond=canonical) as chat:
        first = await start_bot(slack, chat, db)
        mention = user_message(f"<@{BOT_USER}> I want to return my order", kind="app_mention")
        await slack.push(mention)
        await slack.wait_for(lambda: len(chat.requests) == 2)  # Returns has answered
        await asyncio.sleep(0.3)  # the post of that answer is in flight
        first.kill()  # SIGKILL: no cleanup of any kind
        await first.wait()
        slack.release.set()
        slack.hang_text = None

        second = await start_bot(slack, chat, db)
        await slack.wait_for(lambda: REPLY in shown(slack))
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), timeout=20)
    assert shown(slack).count(REPLY) == 1
    assert len(chat.requests) == 2  # the model was not asked again
    kinds = [kind for kind, _ in transcript(db)]
    assert kinds == ["user", "agent", "tool", "handoff", "agent"]  # nothing duplicated


async def test_a_crash_leaves_no_placeholder_behind(slack: SlackServer, tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    answer = "The one and only answer."
    slack.hang_text = answer  # the placeholder's update to the answer never completes
    async with ChatCompletionsServer(respond=lambda body: Reply(answer)) as chat:
        first = await start_bot(slack, chat, db)
        await slack.push(user_message(f"<@{BOT_USER}> hello", kind="app_mention"))
        await slack.wait_for(lambda: WORKING in [v.text for v in slack.visible("C1")])
        await slack.wait_for(lambda: len(chat.requests) == 1)
        await asyncio.sleep(0.3)
        first.kill()
        await first.wait()
        slack.release.set()
        slack.hang_text = None

        second = await start_bot(slack, chat, db)
        await slack.wait_for(lambda: answer in shown(slack))
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), timeout=20)
    assert [v.text for v in slack.visible("C1")] == [answer]  # no placeholder left behind


async def test_sigterm_finishes_the_running_turn_then_exits(
    slack: SlackServer, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    async with ChatCompletionsServer(script=[Delay(1.0, Reply("Worth the wait."))]) as chat:
        bot = await start_bot(slack, chat, db)
        await slack.push(user_message(f"<@{BOT_USER}> hello", kind="app_mention"))
        await slack.wait_for(lambda: len(chat.requests) == 1)  # the turn is running
        bot.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(bot.communicate(), timeout=20)
    assert bot.returncode == 0, err.decode()
    assert "Slack: stopped." in out.decode()
    assert shown(slack) == ["Worth the wait."]


async def test_refused_posts_are_delivered_in_order_when_the_platform_recovers(
    slack: SlackServer, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    async with ChatCompletionsServer(respond=canonical) as chat:
        bot = await start_bot(slack, chat, db)
        slack.refuse_posts = 6  # the placeholder and the first tries of the posts fail
        mention = user_message(f"<@{BOT_USER}> I want to return my order", kind="app_mention")
        await slack.push(mention)
        await slack.wait_for(lambda: len(chat.requests) == 2)
        await slack.push(user_message("Order 42", thread_ts=mention["ts"]))
        await slack.wait_for(lambda: len(shown(slack)) == 3, within=20)
        bot.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bot.wait(), timeout=20)
    assert shown(slack) == [
        "Triage handed you to Returns: Return request.",
        REPLY,
        "Thanks! Order 42 is eligible; a return label is on its way.",
    ]


async def test_model_outage_every_message_answered_or_told_to_retry(
    slack: SlackServer, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    script = [Fail(500), Fail(429), Delay(2.0), Fail(503)]  # then the model recovers
    async with ChatCompletionsServer(script=list(script), respond=canonical) as chat:
        bot = await start_bot(slack, chat, db, OPENAI_TIMEOUT="0.5")
        mention = user_message(f"<@{BOT_USER}> hello?", kind="app_mention")
        await slack.push(mention)
        texts = ["still there?", "anyone?", "I want to return my order", "Order 42", "Order 42"]
        for count, text in enumerate(texts, start=2):
            await slack.wait_for(lambda count=count: len(shown(slack)) >= count - 1, within=20)
            await slack.push(user_message(text, thread_ts=mention["ts"]))
        await slack.wait_for(lambda: "Order 42 is eligible" in str(shown(slack)), within=20)
        bot.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bot.wait(), timeout=20)
    answers = shown(slack)
    assert sum("send it again in a moment" in a for a in answers) == 4  # four honest notices
    assert answers[-1] == "Thanks! Order 42 is eligible; a return label is on its way."
    users = [body for kind, body in transcript(db) if kind == "user"]
    assert len(users) == 6  # no message lost
