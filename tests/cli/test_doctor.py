"""`python -m bot doctor` against the local model, Slack and Discord servers, and databases
that must not change: one line per check whatever fails, and nothing written."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import doctor as doctor_module
from bot.settings import load_settings
from bot.store import sqlite_store
from bot.store.sql import migrations
from tests.fakes.chat_completions import ChatCompletionsServer
from tests.fakes.discord_api import TOKEN, DiscordServer
from tests.fakes.slack_api import SlackServer
from tests.processes import bot, clean_env
from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

LINE = re.compile(r"^(ok  |FAIL)  (workflow|database|outbox|model|slack|discord): \S")


async def doctor(**env: str) -> tuple[int, list[str]]:
    process = await bot("doctor", env=clean_env(**env))
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
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
    assert lines[0].startswith("ok    workflow: ecommerce (shipped, ")
    assert "bot/workflows/ecommerce.yaml): 4 agents, start Triage" in lines[0]
    assert lines[1] == (
        f"ok    database: no database at {tmp_path / 'none-yet.db'} yet; it is created on first run"
    )
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
    assert lines[1] == f"FAIL  database: opening {broken} failed: file is not a database"
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
    assert lines[1] == (f"ok    database: {db}: integrity ok, schema 7 (up to date), 0 open cases")
    assert lines[2] == "ok    outbox: 0 post(s) waiting to be sent, none set aside"
    assert lines[3].startswith("ok    model: offline demo model")


async def test_unreachable_platforms_are_one_line_each_and_the_rest_still_runs(
    tmp_path: Path,
) -> None:
    code, lines = await doctor(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_API_URL="http://127.0.0.1:9/api/",  # nothing listens: connection refused
        DISCORD_TOKEN="anything",
        DISCORD_API_URL="http://switchboard.invalid/api/v10",  # no such host
        BOT_DATABASE=str(tmp_path / "bot.db"),
    )
    assert code == 1
    assert lines[1:] == [
        f"ok    database: no database at {tmp_path / 'bot.db'} yet; it is created on first run",
        "ok    model: offline demo model (set OPENAI_API_KEY or OPENAI_BASE_URL)",
        "FAIL  slack: cannot reach http://127.0.0.1:9/api/ (connection refused)",
        "FAIL  discord: cannot reach http://switchboard.invalid/api/v10 (host not found)",
        "2 check(s) failed.",
    ]
    assert all(LINE.match(line) for line in lines[:-1]), lines


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server that takes connections and never answers."""
    held: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _, writer: held.append(writer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/api/"
    for writer in held:
        writer.close()
    server.close()


async def test_a_platform_that_never_answers_is_one_line_too(
    silent_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor_module, "TIMEOUT_S", 0.3)
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": silent_server,
            "BOT_DATABASE": str(tmp_path / "bot.db"),
        },
        env_file=None,
    )
    findings = await doctor_module.diagnose(settings)
    assert [str(finding) for finding in findings][1:] == [
        f"ok    database: no database at {tmp_path / 'bot.db'} yet; it is created on first run",
        "ok    model: offline demo model (set OPENAI_API_KEY or OPENAI_BASE_URL)",
        f"FAIL  slack: no answer from {silent_server} within 0.3s",
    ]


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


async def test_nothing_is_created_for_a_missing_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "data" / "bot.db"
    _, lines = await doctor(BOT_DATABASE=str(db))
    assert lines[1] == f"ok    database: no database at {db} yet; it is created on first run"
    assert _files(tmp_path) == []


async def test_an_older_sqlite_database_is_reported_not_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as old:
        for version, script in migrations("schema.sql")[:3]:
            old.executescript(f"{script};PRAGMA user_version = {version};")
    newest = migrations("schema.sql")[-1][0]
    _, lines = await doctor(BOT_DATABASE=str(db))
    assert lines[1] == (
        f"ok    database: {db}: schema 3 of {newest} (not migrated yet: the bot migrates at "
        "start-up)"
    )
    with sqlite3.connect(db) as after:
        assert after.execute("PRAGMA user_version").fetchone()[0] == 3


async def _tables(schema: str) -> list[str]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        found = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    return sorted(row[0] for row in found)


async def test_postgres_is_read_and_never_migrated() -> None:
    import asyncpg

    schema = await postgres_schema()
    assert schema is not None
    url = f"{POSTGRES_DSN}?search_path={schema}"
    where = re.sub(r"//[^@/]*@", "//", url)  # as the driver shows it: no credentials
    try:
        _, lines = await doctor(BOT_DATABASE=url)
        assert lines[1] == (
            f"ok    database: no Switchboard tables in {where} yet; the bot creates them at "
            "start-up"
        )
        assert await _tables(schema) == []

        conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
        try:  # the first migration, as an older Switchboard left it
            await conn.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at DOUBLE PRECISION NOT NULL)"
            )
            await conn.execute(migrations("schema_postgres.sql")[0][1])
            await conn.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        finally:
            await conn.close()
        tables = await _tables(schema)
        newest = migrations("schema_postgres.sql")[-1][0]
        _, lines = await doctor(BOT_DATABASE=url)
        assert lines[1] == (
            f"ok    database: {where}: schema 1 of {newest} (not migrated yet: the bot migrates "
            "at start-up)"
        )
        assert await _tables(schema) == tables
    finally:
        await drop_schema(schema)


def test_a_finding_of_several_lines_prints_as_one() -> None:
    finding = doctor_module.Finding(False, "workflow", "w.yaml: start: is required\nw.yaml: x\n")
    assert str(finding) == "FAIL  workflow: w.yaml: start: is required; w.yaml: x"
