"""`python -m bot doctor`: check configuration, database, model endpoint and platform tokens."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.engine.errors import WorkflowError
from bot.engine.loader import load_workflow
from bot.settings import Settings
from bot.store import StoreError, is_postgres, postgres_store
from bot.store.sql import migrations

TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One check: passed or not, and what it found, in plain words."""

    ok: bool
    area: str
    text: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.area}: {self.text}"


async def diagnose(settings: Settings) -> list[Finding]:
    """Run every check that applies to this configuration."""
    database = settings.bot_database
    stored = await _postgres(database) if is_postgres(database) else _database(database)
    findings = [_workflow(settings), *stored]
    checks: list[Callable[[], Awaitable[Finding]]] = [lambda: _model(settings)]
    if settings.slack_bot_token is not None:
        checks.append(lambda: _slack(settings))
    if settings.discord_token is not None:
        checks.append(lambda: _discord(settings))
    for check in checks:
        try:
            findings.append(await asyncio.wait_for(check(), TIMEOUT_S))
        except TimeoutError:
            findings.append(Finding(False, "network", f"no answer within {TIMEOUT_S:.0f}s"))
    return findings


def _workflow(settings: Settings) -> Finding:
    try:
        workflow = load_workflow(settings.bot_workflow)
    except WorkflowError as exc:
        return Finding(False, "workflow", str(exc).replace("\n", "; "))
    extra = f"; warnings: {'; '.join(workflow.warnings)}" if workflow.warnings else ""
    return Finding(
        True,
        "workflow",
        f"{settings.bot_workflow}: {len(workflow.agents)} agents, start {workflow.start}{extra}",
    )


async def _postgres(url: str) -> list[Finding]:
    """Connect, and read the schema version and the backlog."""
    from bot.store.postgres import SCHEMA

    store = postgres_store(url)
    try:
        await store.open()  # migrates, as the bot would at start-up
        version = await store.schema_version()
        unsent = await store.count_unsent()
        dead = await store.count_dead()
        cases = len(await store.cases(status="open", limit=10_000))
    except StoreError as exc:
        return [Finding(False, "database", str(exc))]
    finally:
        await store.close()
    newest = migrations(SCHEMA)[-1][0]
    found = f"{store.where}: schema {version} of {newest}, {cases} open cases"
    return [Finding(True, "database", found), _outbox(unsent, dead)]


def _outbox(unsent: int, dead: int) -> Finding:
    """Posts waiting, and posts set aside because the platform refused them for good."""
    if dead:
        return Finding(
            False,
            "outbox",
            f"{dead} post(s) refused by the platform for good and set aside; "
            f"`python -m bot dead-letters` lists them ({unsent} waiting to be sent)",
        )
    return Finding(True, "outbox", f"{unsent} post(s) waiting to be sent, none set aside")


def _database(path: str) -> list[Finding]:
    """Read-only: integrity, schema version, undelivered and dead posts, open cases."""
    if not Path(path).exists():
        return [Finding(True, "database", f"{path} does not exist yet; it is created on first run")]
    from bot.store.sqlite import SCHEMA

    newest = migrations(SCHEMA)[-1][0]
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            counts = _counts(db, version)
    except sqlite3.Error as exc:
        return [Finding(False, "database", f"{path} cannot be read: {exc}")]
    if integrity != "ok":
        return [Finding(False, "database", f"{path} is damaged: {integrity}")]
    if version > newest:
        return [Finding(False, "database", f"{path} has schema {version}, newer than {newest}")]
    state = "up to date" if version == newest else f"will migrate from {version} to {newest}"
    unsent, dead, cases = counts
    found = f"{path}: integrity ok, schema {version} ({state}), {cases} open cases"
    return [Finding(True, "database", found), _outbox(unsent, dead)]


def _counts(db: sqlite3.Connection, version: int) -> tuple[int, int, int]:
    """Posts waiting, posts set aside, and open cases, at any schema version."""

    def one(sql: str, since: int) -> int:
        return int(db.execute(sql).fetchone()[0]) if version >= since else 0

    live = "sent_at IS NULL" + (" AND dead_at IS NULL" if version >= 6 else "")
    return (
        one(f"SELECT count(*) FROM outbox WHERE {live}", 4),
        one("SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL", 6),
        one("SELECT count(*) FROM cases WHERE status = 'open'", 3),
    )


async def _model(settings: Settings) -> Finding:
    if not settings.has_real_model:
        return Finding(True, "model", "offline demo model (set OPENAI_API_KEY or OPENAI_BASE_URL)")
    from bot.models.openai import OpenAIChatModel  # imports openai only when one is configured

    model = OpenAIChatModel.from_settings(settings)
    where = settings.openai_base_url or "OpenAI"
    try:
        await model.client.models.list()
    except Exception as exc:
        return Finding(False, "model", f"{where} did not answer a model listing ({_why(exc)})")
    finally:
        await model.aclose()
    return Finding(True, "model", f"{where} answers; default model {settings.openai_model}")


async def _slack(settings: Settings) -> Finding:
    data = await _signed_in(
        "slack", settings.slack_bot_token, settings.slack_api_url or "https://slack.com/api/"
    )
    if not data.get("ok"):
        reason = data.get("error") or f"HTTP {data['status']}"
        return Finding(False, "slack", f"SLACK_BOT_TOKEN was refused ({reason})")
    mode = "Socket Mode" if settings.slack_app_token else "HTTP events"
    return Finding(True, "slack", f"signed in as {data.get('user')} in {data.get('team')}, {mode}")


async def _discord(settings: Settings) -> Finding:
    base = settings.discord_api_url or "https://discord.com/api/v10"
    data = await _signed_in("discord", settings.discord_token, base)
    if data["status"] != 200:
        return Finding(False, "discord", f"DISCORD_TOKEN was refused (HTTP {data['status']})")
    return Finding(True, "discord", f"signed in as {data.get('username')}")


_WHO_AM_I = {"slack": ("POST", "auth.test", "Bearer"), "discord": ("GET", "users/@me", "Bot")}


async def _signed_in(platform: str, token: Any, base: str) -> dict[str, Any]:
    """Who the platform says the token is: its JSON answer, with the HTTP status."""
    method, path, scheme = _WHO_AM_I[platform]
    status, data = await _api(method, base, path, f"{scheme} {token.get_secret_value()}")
    return {**data, "status": status}


async def _api(method: str, base: str, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
    """One platform API call: its status, and its JSON body when it answered 200."""
    url = f"{base.rstrip('/')}/{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers={"Authorization": authorization}) as response,
    ):
        data = await response.json(content_type=None) if response.status == 200 else {}
    return response.status, data if isinstance(data, dict) else {}


def _why(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__
