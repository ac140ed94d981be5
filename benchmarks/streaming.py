"""Streaming: how soon a reply being written is on screen, and what it costs in platform calls.

A real bot process (`python -m bot slack` or `discord`) against the local Slack or Discord server,
and a Chat Completions server that streams each reply one token every `--token-ms`. Messages are
sent one at a time, each in a thread of its own. For each reply it measures the time from the
model's first token to the platform call that first shows some of its text, and counts the calls
that showed it (the placeholder, its edits). Prints one JSON line per platform: the latency's
median and maximum, the calls per reply, and the edits a second per message against the rate the
platform allows (Slack: chat.update is Tier 3, about 50 a minute; the bot keeps to 40).

Usage: python benchmarks/streaming.py [--platform slack|discord|both] [--replies 10]
       [--tokens 40] [--token-ms 100] [--interval-ms 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.chat_completions import ChatCompletionsServer, Reply  # noqa: E402
from tests.fakes.discord_api import BOT, BOT_USER, TOKEN, DiscordServer  # noqa: E402
from tests.fakes.slack_api import BOT_USER as SLACK_BOT  # noqa: E402
from tests.fakes.slack_api import SlackServer, user_message  # noqa: E402
from tests.processes import bot, clean_env, started, stop  # noqa: E402

SLACK_RATE_PER_MIN = 50  # chat.update, Tier 3 (the bot's own budget is 40)


def _text(tokens: int) -> str:
    return " ".join(f"word{i}" for i in range(tokens))


async def _slack(
    args: argparse.Namespace, chat: ChatCompletionsServer, db: Path
) -> tuple[list[dict[str, Any]], float]:
    text = _text(args.tokens)
    async with SlackServer() as slack:
        env = clean_env(
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_APP_TOKEN="xapp-test",
            SLACK_API_URL=slack.api_url,
            OPENAI_BASE_URL=chat.base_url,
            BOT_DATABASE=str(db),
            BOT_STREAM_INTERVAL_MS=str(args.interval_ms),
        )
        process = await bot("slack", env=env)
        await started(process, "Slack: connected")
        measured = []
        began = time.monotonic()
        try:
            for number in range(args.replies):
                tokens, calls = len(chat.token_times), len(slack.calls)
                message = user_message(f"<@{SLACK_BOT}> question {number}", kind="app_mention")
                await slack.push(message)
                thread = str(message["ts"])

                def answered(thread: str = thread) -> bool:
                    return any(v.thread_ts == thread and v.text == text for v in slack.visible())

                await slack.wait_for(answered, within=60)
                mine = [
                    c for c in slack.calls[calls:] if c.method.startswith("chat.") and not c.refused
                ]
                shown = [c for c in mine if c.method == "chat.update"]
                measured.append(_figures(chat.token_times[tokens:], [c.at for c in shown], mine))
            updates = [c for c in slack.calls if c.method == "chat.update" and c.at >= began]
            per_min = len(updates) / (time.monotonic() - began) * 60
        finally:
            await stop(process)
    return measured, per_min


async def _discord(
    args: argparse.Namespace, chat: ChatCompletionsServer, db: Path
) -> tuple[list[dict[str, Any]], float]:
    text = _text(args.tokens)
    async with DiscordServer() as server:
        env = clean_env(
            DISCORD_TOKEN=TOKEN,
            DISCORD_API_URL=server.api_url,
            DISCORD_GATEWAY_URL=server.gateway_url,
            OPENAI_BASE_URL=chat.base_url,
            BOT_DATABASE=str(db),
            BOT_STREAM_INTERVAL_MS=str(args.interval_ms),
        )
        process = await bot("discord", env=env)
        await started(process, "Discord: connected as Switchboard.")
        measured = []
        began = time.monotonic()
        try:
            for number in range(args.replies):
                tokens, edits, posted = (
                    len(chat.token_times),
                    len(server.edits),
                    len(server.posted()),
                )
                await server.say(f"<@{BOT}> question {number}", mentions=[BOT_USER])

                def answered(before: int = posted) -> bool:
                    now = server.posted()
                    return len(now) > before and now[-1][1] == text

                await server.wait_for(answered, within=60)
                shown = server.edits[edits:]
                calls = [None, *shown]  # the placeholder's post, then its edits
                measured.append(
                    _figures(chat.token_times[tokens:], [e["at"] for e in shown], calls)
                )
            per_min = len(server.edits) / (time.monotonic() - began) * 60
        finally:
            await stop(process)
    return measured, per_min


def _figures(tokens: list[float], shows: list[float], calls: list[Any]) -> dict[str, Any]:
    first = tokens[0]
    writing = max(tokens[-1] - first, 1e-9)
    return {
        "first_shown_ms": (min(t for t in shows if t >= first) - first) * 1000,
        "calls": len(calls),
        "edits_per_s": len(shows) / max(shows[-1] - shows[0], writing),
    }


def _summary(
    platform: str, args: argparse.Namespace, runs: list[dict[str, Any]], per_min: float
) -> dict[str, Any]:
    latency = [r["first_shown_ms"] for r in runs]
    summary = {
        "platform": platform,
        "replies": len(runs),
        "tokens_per_reply": args.tokens,
        "token_ms": args.token_ms,
        "interval_ms": args.interval_ms,
        "first_token_to_shown_ms_median": round(statistics.median(latency), 1),
        "first_token_to_shown_ms_max": round(max(latency), 1),
        "calls_per_reply_median": statistics.median(r["calls"] for r in runs),
        "calls_per_reply_max": max(r["calls"] for r in runs),
        "edits_per_s_per_message_max": round(max(r["edits_per_s"] for r in runs), 2),
        "edits_per_min_overall": round(per_min, 1),
    }
    if platform == "slack":
        summary["slack_update_rate_per_min_allowed"] = SLACK_RATE_PER_MIN
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=("slack", "discord", "both"), default="both")
    parser.add_argument("--replies", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-ms", type=int, default=100)
    parser.add_argument("--interval-ms", type=int, default=1000)
    args = parser.parse_args()
    text = _text(args.tokens)
    platforms = ("slack", "discord") if args.platform == "both" else (args.platform,)
    for platform in platforms:
        async with ChatCompletionsServer(
            respond=lambda body: Reply(text), token_delay=args.token_ms / 1000
        ) as chat:
            with tempfile.TemporaryDirectory() as folder:
                run = _slack if platform == "slack" else _discord
                runs, per_min = await run(args, chat, Path(folder) / "bench.db")
        print(json.dumps(_summary(platform, args, runs, per_min)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
