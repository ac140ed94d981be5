"""`python -m bot doctor` against the local model, Slack and Discord servers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.store import sqlite_store
from tests.fakes.chat_completions import ChatCompletionsServer
from tests.fakes.discord_api import TOKEN, DiscordServer
from tests.fakes.slack_api import SlackServer
from tests.processes import bot, clean_env


async def doctor(**env: str) -> tuple[int, list[str]]:
    process = await bot("doctor", env=clean_env(**env))
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


async def test_a_healthy_setup(tmp_path: Path) -> None:
    async with ChatCompletionsServer() as chat, SlackServer() as slack, DiscordServer() as disc:
        code, lines = await doctor(
            OPENAI_BASE_URL=chat.base_url,
            OPENAI_API_KEY="sk-secret-doctor",
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_APP_TOKEN="xapp-test",
            SLACK_API_URL=slack.api_url,
            DISCORD_TOKEN=TOKEN,
            DISCORD_API_URL=disc.api_url,
            BOT_DATABASE=str(tmp_path / "none-yet.db"),
        )
    assert code == 0, lines
    assert lines[0].startswith("ok    workflow: workflows/ecommerce.yaml: 4 agents, start Triage")
    assert lines[1].endswith("does not exist yet; it is created on first run")
    assert lines[2] == f"ok    model: {chat.base_url} answers; default model gpt-4.1-mini"
    assert lines[3] == "ok    slack: signed in as switchboard in Test, Socket Mode"
    assert lines[4] == "ok    discord: signed in as Switchboard"
    assert lines[-1] == "All checks passed."
    assert not any("sk-secret-doctor" in line for line in lines)


async def test_problems_are_named_in_plain_words(tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    async with SlackServer() as slack, DiscordServer() as disc:
        code, lines = await doctor(
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",
            OPENAI_MAX_RETRIES="0",
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_API_URL=f"http://127.0.0.1:{slack.port}/nope/",
            DISCORD_TOKEN="wrong",
            DISCORD_API_URL=disc.api_url,
            BOT_DATABASE=str(broken),
        )
    assert code == 1
    assert lines[1].startswith(f"FAIL  database: {broken} cannot be read: file is not a database")
    assert (
        lines[2] == "FAIL  model: http://127.0.0.1:9/v1 did not answer a model listing "
        "(APIConnectionError)"
    )
    assert lines[3] == "FAIL  slack: SLACK_BOT_TOKEN was refused (HTTP 404)"
    assert lines[4] == "FAIL  discord: DISCORD_TOKEN was refused (HTTP 401)"
    assert lines[-1] == "4 check(s) failed."


async def test_an_existing_database_reports_its_state(tmp_path: Path) -> None:

    db = tmp_path / "bot.db"
    async with sqlite_store(db):
        pass
    code, lines = await doctor(BOT_DATABASE=str(db))
    assert code == 0
    assert lines[1] == (f"ok    database: {db}: integrity ok, schema 6 (up to date), 0 open cases")
    assert lines[2] == "ok    outbox: 0 post(s) waiting to be sent, none set aside"
    assert lines[3].startswith("ok    model: offline demo model")
