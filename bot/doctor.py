"""`python -m bot doctor`: check configuration, MCP servers, database, model endpoint and
platform tokens.

The checks run side by side, each under a time limit, and each ends in its findings, one line
apiece, whatever happens inside it (a refused connection, an unknown host, a hang, a bug): one
check that fails never hides the others. Nothing is written: the database is opened read-only.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.engine import mcp
from bot.engine.agents import McpServer
from bot.engine.errors import WorkflowError
from bot.engine.loader import find_workflow, load_workflow
from bot.settings import Settings
from bot.store import Store, StoreError, store_for
from bot.store.values import Unmigrated

TIMEOUT_S = 10.0
MCP_START_S = 6.0  # a server that does not answer is named before the check's own limit
_UNREACHABLE = (aiohttp.ClientError, OSError)  # OSError covers TimeoutError and DNS failures


@dataclass(frozen=True, slots=True)
class Finding:
    """One check: passed or not, and what it found, in plain words."""

    ok: bool
    area: str
    text: str

    def __str__(self) -> str:
        text = "; ".join(line.strip() for line in self.text.splitlines() if line.strip())
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.area}: {text}"


async def diagnose(settings: Settings) -> list[Finding]:
    """Run every check that applies to this configuration; the findings in a fixed order."""
    store = store_for(settings.bot_database, read_only=True)
    checks: list[tuple[str, str, Awaitable[Finding | list[Finding]]]] = [
        ("workflow", str(settings.bot_workflow), asyncio.to_thread(_workflow, settings)),
        ("mcp", "the MCP servers", _mcp(settings)),
        ("database", store.where, _database(store)),
        ("model", settings.openai_base_url or "OpenAI", _model(settings)),
    ]
    if settings.slack_bot_token is not None:
        checks.append(("slack", _slack_url(settings), _slack(settings)))
    if settings.discord_token is not None:
        checks.append(("discord", _discord_url(settings), _discord(settings)))
    found = await asyncio.gather(*(_guarded(*check) for check in checks))
    return [finding for findings in found for finding in findings]


async def _guarded(
    area: str, where: str, check: Awaitable[Finding | list[Finding]]
) -> list[Finding]:
    """A check's findings; a check that cannot finish is one failed finding saying why."""
    try:
        found = await asyncio.wait_for(check, TIMEOUT_S)
    except TimeoutError:
        return [Finding(False, area, f"no answer from {where} within {TIMEOUT_S:g}s")]
    except _UNREACHABLE as exc:
        return [Finding(False, area, f"cannot reach {where} ({_why(exc)})")]
    except Exception as exc:  # whatever it is, the other checks still report
        return [Finding(False, area, f"could not be checked ({_why(exc)})")]
    return found if isinstance(found, list) else [found]


def _workflow(settings: Settings) -> Finding:
    try:
        workflow = load_workflow(settings.bot_workflow)
    except WorkflowError as exc:
        return Finding(False, "workflow", str(exc))
    extra = f"; warnings: {'; '.join(workflow.warnings)}" if workflow.warnings else ""
    given = settings.bot_workflow
    found = find_workflow(given)
    where = f"{given}" if found == given else f"{given} (shipped, {found})"
    return Finding(
        True, "workflow", f"{where}: {len(workflow.agents)} agents, start {workflow.start}{extra}"
    )


async def _mcp(settings: Settings) -> list[Finding]:
    """Each MCP server the workflow declares, started (or reached) and its tools listed, then
    stopped; a workflow that does not load is the workflow check's finding, not this one's."""
    try:
        workflow = await asyncio.to_thread(load_workflow, settings.bot_workflow)
    except WorkflowError:
        return []
    return list(await asyncio.gather(*(_mcp_server(server) for server in mcp.servers(workflow))))


async def _mcp_server(server: McpServer) -> Finding:
    area = f"mcp {server.label}"
    try:
        names = await mcp.probe(server, MCP_START_S)
    except mcp.McpError as exc:
        return Finding(False, area, str(exc))
    return Finding(True, area, mcp.tool_count(names))


async def _database(store: Store) -> list[Finding]:
    """Integrity (SQLite), schema version, open cases, and the outbox, read-only."""
    try:
        async with store:
            integrity = await store.integrity()
            if integrity not in (None, "ok"):
                return [Finding(False, "database", f"{store.where} is damaged: {integrity}")]
            version = await store.schema_version()
            cases = await store.count_cases("open")
            unsent, dead = await store.count_unsent(), await store.count_dead()
    except Unmigrated as exc:  # nothing yet, or an older schema: the bot sets it up at start-up
        return [Finding(True, "database", str(exc))]
    except StoreError as exc:
        return [Finding(False, "database", str(exc))]
    checked = "" if integrity is None else "integrity ok, "
    found = f"{store.where}: {checked}schema {version} (up to date), {cases} open cases"
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


def _slack_url(settings: Settings) -> str:
    return settings.slack_api_url or "https://slack.com/api/"


def _discord_url(settings: Settings) -> str:
    return settings.discord_api_url or "https://discord.com/api/v10"


async def _slack(settings: Settings) -> Finding:
    data = await _signed_in("slack", settings.slack_bot_token, _slack_url(settings))
    if not data.get("ok"):
        reason = data.get("error") or f"HTTP {data['status']}"
        return Finding(False, "slack", f"SLACK_BOT_TOKEN was refused ({reason})")
    mode = "Socket Mode" if settings.slack_app_token else "HTTP events"
    return Finding(True, "slack", f"signed in as {data.get('user')} in {data.get('team')}, {mode}")


async def _discord(settings: Settings) -> Finding:
    data = await _signed_in("discord", settings.discord_token, _discord_url(settings))
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
        try:
            data = await response.json(content_type=None) if response.status == 200 else {}
        except ValueError:  # an answer that is not JSON: a proxy's page, say
            data = {}
    return response.status, data if isinstance(data, dict) else {}


def _why(exc: BaseException) -> str:
    """A failure in a few words: the HTTP status, what the network said, or the error's kind."""
    status = getattr(exc, "status_code", None)
    if status:
        return f"HTTP {status}"
    cause = getattr(exc, "os_error", None) or exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host not found"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
