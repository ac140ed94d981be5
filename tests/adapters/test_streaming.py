"""Replies that appear as they are written, seen from outside: a real bot process, a model server
that streams one token every 100 ms, and the local Slack and Discord servers. The first words are
on screen while the model still writes; the message ends as the stored reply, under the agent's
persona, with a bounded number of edits; a crash mid-stream leaves one message, not two."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
from pathlib import Path

from bot.adapters.text import escape_slack
from tests.fakes.chat_completions import ChatCompletionsServer, Reply, Step
from tests.fakes.discord_api import BOT, BOT_USER, TOKEN, DiscordServer
from tests.fakes.slack_api import BOT_USER as SLACK_BOT
from tests.fakes.slack_api import Call, SlackServer, user_message
from tests.processes import bot, clean_env, started, stop

TOKEN_S = 0.1  # the model writes one token every 100 ms
INTERVAL_S = 0.5  # BOT_STREAM_INTERVAL_MS: at most one edit per message per interval
WORDS = " ".join(f"step{i}" for i in range(14))
TEXT = f"Here is the plan <!channel> @everyone: {WORDS}. Done."
WORKING = "_working on it…_"


def writes(body: dict[str, object]) -> Step:
    return Reply(TEXT)


async def exported(env: dict[str, str]) -> list[dict[str, object]]:
    """The stored conversation, as `export --format json` prints it."""
    process = await bot("export", "1", "--format", "json", env=env)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    entries = json.loads(out)["transcript"]
    assert isinstance(entries, list)
    return entries


def stored_replies(entries: list[dict[str, object]]) -> list[str]:
    return [str(e["text"]) for e in entries if e.get("kind") == "agent" and e.get("text")]


def slack_env(slack: SlackServer, chat: ChatCompletionsServer, db: Path) -> dict[str, str]:
    return clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        SLACK_API_URL=slack.api_url,
        OPENAI_BASE_URL=chat.base_url,
        OPENAI_MAX_RETRIES="0",
        BOT_DATABASE=str(db),
        BOT_STREAM_INTERVAL_MS=str(int(INTERVAL_S * 1000)),
        BOT_SWEEP_S="0.2",
    )


async def slack_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await bot("slack", env=env)
    await started(process, "Slack: connected")
    return process


def edits(slack: SlackServer, ts: str) -> list[Call]:
    return [c for c in slack.calls if c.method == "chat.update" and c.args.get("ts") == ts]


def bound(chat: ChatCompletionsServer) -> int:
    """Edits a message may get while `chat` wrote: the first at once, then one per interval,
    and the final post."""
    writing = chat.token_times[-1] - chat.token_times[0]
    return math.ceil(writing / INTERVAL_S) + 2


async def test_slack_shows_the_reply_as_it_is_written(tmp_path: Path) -> None:
    async with (
        SlackServer() as slack,
        ChatCompletionsServer(respond=writes, token_delay=TOKEN_S) as chat,
    ):
        env = slack_env(slack, chat, tmp_path / "s.db")
        process = await slack_bot(env)
        try:
            await slack.push(user_message(f"<@{SLACK_BOT}> what now?", kind="app_mention"))
            await slack.wait_for(
                lambda: any(v.text == escape_slack(TEXT) for v in slack.visible("C1")), within=20
            )
        finally:
            await stop(process)
        entries = await exported(env)
    (placeholder,) = slack.posts("C1")  # one message: the placeholder, edited to the reply
    assert (placeholder.args["username"], placeholder.args["text"]) == ("Triage", WORKING)
    updates = edits(slack, str(placeholder.ts))
    partial = [c for c in updates if c.args["text"] != escape_slack(TEXT)]
    assert partial and partial[0].at < chat.token_times[-1]  # shown while the model still wrote
    assert len(updates) <= bound(chat)
    assert all("<!channel>" not in c.args["text"] for c in updates)  # mentions stay disabled
    assert all("username" not in c.args for c in updates)  # the persona is the placeholder's
    (shown,) = [v for v in slack.visible("C1") if v.ts == placeholder.ts]
    assert (shown.username, shown.text) == ("Triage", escape_slack(TEXT))
    assert stored_replies(entries) == [TEXT]  # stored once, as written


async def test_slack_a_crash_mid_stream_leaves_one_message(tmp_path: Path) -> None:
    async with (
        SlackServer() as slack,
        ChatCompletionsServer(respond=writes, token_delay=TOKEN_S) as chat,
    ):
        env = slack_env(slack, chat, tmp_path / "s.db")
        process = await slack_bot(env)
        try:
            await slack.push(user_message(f"<@{SLACK_BOT}> what now?", kind="app_mention"))
            await slack.wait_for(
                lambda: any("step" in c.args.get("text", "") for c in slack.calls), within=20
            )
            os.kill(process.pid, signal.SIGKILL)  # mid-stream: part of the reply is on screen
            await process.wait()
            process = await slack_bot(env)
            await slack.wait_for(
                lambda: any(v.text == escape_slack(TEXT) for v in slack.visible("C1")), within=30
            )
            await asyncio.sleep(0.5)  # nothing more comes
        finally:
            await stop(process)
        entries = await exported(env)
    assert len(chat.requests) == 2  # the turn was resumed
    shown = [v for v in slack.visible("C1") if v.thread_ts is not None]
    assert [(v.username, v.text) for v in shown] == [("Triage", escape_slack(TEXT))]
    assert stored_replies(entries) == [TEXT]


def discord_env(server: DiscordServer, chat: ChatCompletionsServer, db: Path) -> dict[str, str]:
    return clean_env(
        DISCORD_TOKEN=TOKEN,
        DISCORD_API_URL=server.api_url,
        DISCORD_GATEWAY_URL=server.gateway_url,
        OPENAI_BASE_URL=chat.base_url,
        OPENAI_MAX_RETRIES="0",
        BOT_DATABASE=str(db),
        BOT_STREAM_INTERVAL_MS=str(int(INTERVAL_S * 1000)),
    )


async def test_discord_edits_the_reply_as_it_is_written(tmp_path: Path) -> None:
    async with (
        DiscordServer() as server,
        ChatCompletionsServer(respond=writes, token_delay=TOKEN_S) as chat,
    ):
        env = discord_env(server, chat, tmp_path / "d.db")
        process = await bot("discord", env=env)
        await started(process, "Discord: connected as Switchboard.")
        try:
            mention = await server.say(f"<@{BOT}> what now?", mentions=[BOT_USER])
            await server.wait_for(lambda: len(server.posted()) == 1, within=20)
        finally:
            await stop(process)
        entries = await exported(env)
    assert server.posted() == [("Triage", TEXT, mention["id"])]
    ids = {e["id"] for e in server.edits}
    assert len(ids) == 1  # every edit went to the one message
    partial = [e for e in server.edits if e["content"] != TEXT]
    assert partial and partial[0]["at"] < chat.token_times[-1]
    assert len(server.edits) <= bound(chat)
    assert all(e["allowed_mentions"] == {"parse": []} for e in server.edits)
    assert server.deleted == []  # the placeholder became the reply
    assert stored_replies(entries) == [TEXT]


async def test_discord_edits_keep_to_the_rate_limit_headers(tmp_path: Path) -> None:
    async with (
        DiscordServer() as server,
        ChatCompletionsServer(respond=writes, token_delay=TOKEN_S) as chat,
    ):
        server.edit_limit = 1  # one edit a second per webhook: tighter than the interval
        env = discord_env(server, chat, tmp_path / "d.db") | {"BOT_STREAM_INTERVAL_MS": "100"}
        process = await bot("discord", env=env)
        await started(process, "Discord: connected as Switchboard.")
        try:
            mention = await server.say(f"<@{BOT}> what now?", mentions=[BOT_USER])
            await server.wait_for(lambda: len(server.posted()) == 1, within=20)
        finally:
            await stop(process)
    assert server.posted() == [("Triage", TEXT, mention["id"])]
    seconds = {int(e["at"]) for e in server.edits}
    assert len(server.edits) == len(seconds)  # never two in the same second
    assert server.limited <= 1  # the headers were heeded, not the 429s
