"""Real `python -m bot` processes against the local Discord and Slack: `/metrics`, `/healthz`
and `/readyz` read over HTTP, counters that move after a conversation, and JSON log lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from benchmarks.crash import _free_port
from tests.fakes.chat_completions import ChatCompletionsServer, canonical
from tests.fakes.discord_api import BOT, BOT_USER, TOKEN, DiscordServer
from tests.fakes.slack_api import BOT_USER as SLACK_BOT
from tests.fakes.slack_api import SlackServer, event_callback, sign, user_message
from tests.processes import bot, clean_env, stop

SECRET = "observe-signing-secret"


async def line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as answer,
    ):
        return answer.status, await answer.text()


def samples(exposition: str) -> dict[str, float]:
    """`name{labels}` -> value, from the Prometheus text format."""
    found = {}
    for each in exposition.splitlines():
        if each and not each.startswith("#"):
            name, _, number = each.rpartition(" ")
            found[name] = float(number)
    return found


async def test_a_discord_process_serves_metrics_and_health_on_its_port(tmp_path: Path) -> None:
    port = _free_port()
    async with DiscordServer() as discord, ChatCompletionsServer(respond=canonical) as chat:
        env = clean_env(
            DISCORD_TOKEN=TOKEN,
            DISCORD_API_URL=discord.api_url,
            DISCORD_GATEWAY_URL=discord.gateway_url,
            DISCORD_MODERATOR_CHANNEL="900000000000000007",
            OPENAI_BASE_URL=chat.base_url,
            BOT_DATABASE=str(tmp_path / "d.db"),
            BOT_METRICS_PORT=str(port),
            BOT_LOG_FORMAT="json",
            BOT_LOG_LEVEL="INFO",
        )
        process = await bot("discord", env=env)
        try:
            assert await line(process) == f"Metrics: /metrics, /healthz and /readyz on port {port}."
            assert await line(process) == "Discord: connected as Switchboard."
            assert await get(port, "/healthz") == (200, '{"status": "ok"}')
            status, body = await get(port, "/readyz")
            assert status == 200, body
            assert json.loads(body) == {"status": "ready", "store": "ok", "platform": "connected"}
            before = samples((await get(port, "/metrics"))[1])
            assert before['switchboard_turns_total{outcome="answered"}'] == 0
            assert before['switchboard_handoffs_total{source="Triage",target="Returns"}'] == 0
            assert before["switchboard_active_conversations"] == 0

            await discord.say(f"<@{BOT}> I want to return my order", mentions=[BOT_USER])
            await discord.wait_for(lambda: len(discord.posted()) == 2, within=20)
            after = samples((await get(port, "/metrics"))[1])
        finally:
            err = await stop(process)
    assert process.returncode == 0, err
    assert after['switchboard_turns_total{outcome="answered"}'] == 1
    assert after['switchboard_handoffs_total{source="Triage",target="Returns"}'] == 1
    calls = "switchboard_model_call_duration_seconds_count"
    assert after[f'{calls}{{agent="Triage",model="gpt-4.1-mini"}}'] == 1
    assert after[f'{calls}{{agent="Returns",model="gpt-4.1-mini"}}'] == 1
    assert after["switchboard_turn_duration_seconds_count"] == 1
    assert after["switchboard_active_conversations"] == 1
    assert after["switchboard_outbox_backlog"] == 0
    assert after["switchboard_store_up"] == 1

    # Every log line is one JSON object; a turn's lines name the thread and the agent.
    lines = [json.loads(each) for each in err.splitlines()]
    assert all({"time", "level", "logger", "event"} <= set(each) for each in lines), lines
    handed = next(each for each in lines if "handed off to" in each["event"])
    assert handed["logger"] == "bot.service.turn" and handed["level"] == "INFO"
    assert handed["session"].startswith("discord:") and handed["agent"] == "Triage"
    assert all("return my order" not in each["event"] for each in lines)  # no message text


async def test_slack_http_mode_serves_them_on_its_events_port(tmp_path: Path) -> None:
    port = _free_port()
    async with SlackServer() as slack, ChatCompletionsServer(respond=canonical) as chat:
        env = clean_env(
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=slack.api_url,
            SLACK_MODERATOR_CHANNEL="CMOD",
            PORT=str(port),
            OPENAI_BASE_URL=chat.base_url,
            BOT_DATABASE=str(tmp_path / "s.db"),
        )
        process = await bot("slack", env=env)
        try:
            assert (await line(process)).startswith(f"Slack: listening for events on port {port}")
            assert (await get(port, "/healthz"))[0] == 200
            assert (await get(port, "/readyz"))[0] == 200
            opening = user_message(f"<@{SLACK_BOT}> I want to return my order", kind="app_mention")
            body = json.dumps(event_callback(opening)).encode()
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{port}/slack/events", data=body, headers=sign(SECRET, body)
                ) as answer,
            ):
                assert answer.status == 200
            await slack.wait_for(
                lambda: any("order number" in v.text for v in slack.visible("C1")), within=20
            )
            after = samples((await get(port, "/metrics"))[1])
        finally:
            err = await stop(process)
    assert process.returncode == 0, err
    assert after['switchboard_turns_total{outcome="answered"}'] == 1
    assert after['switchboard_handoffs_total{source="Triage",target="Returns"}'] == 1
    assert after["switchboard_active_conversations"] == 1
