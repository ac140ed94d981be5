"""Slack in HTTP mode (signed requests) and as a real process that restarts on the same database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.adapters.slack import SlackConfig, build_app, events_app, slack_platform
from bot.engine.loader import load_workflow
from bot.service import ConversationService
from bot.store import Store
from bot.testing import ScriptedModel, call, say
from tests.fakes.chat_completions import ChatCompletionsServer, canonical
from tests.fakes.slack_api import BOT_USER, SlackServer, event_callback, sign, user_message
from tests.processes import bot, clean_env, started, stop

ROOT = Path(__file__).parents[2]
SHOP = load_workflow(ROOT / "workflows" / "ecommerce.yaml")
SECRET = "signing-secret-for-tests"


@pytest.fixture
async def slack() -> AsyncIterator[SlackServer]:
    async with SlackServer() as server:
        yield server


class HttpBot:
    """The Bolt app's own aiohttp endpoint on a free port, with the service behind it."""

    def __init__(self, slack: SlackServer, store: Store, model: ScriptedModel):
        config = self.config = SlackConfig("xoxb-test", None, SECRET, slack.api_url, 0)
        platform = slack_platform(config)
        self.app = build_app(ConversationService(SHOP, model, store, platform), platform, config)
        self.url = ""

    async def __aenter__(self) -> HttpBot:
        self.runner = web.AppRunner(events_app(self.app, self.config), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/slack/events"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    async def send(
        self,
        payload: dict[str, object],
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        retry: int = 0,
    ) -> tuple[int, str]:
        body = json.dumps(payload).encode()
        headers = sign(secret, body, timestamp)
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.url, data=body, headers=headers) as response,
        ):
            return response.status, await response.text()


def visible_texts(slack: SlackServer) -> list[str]:
    return [v.text for v in slack.visible() if v.text != "_working on it…_"]


async def test_url_verification_and_signatures(slack: SlackServer, store: Store) -> None:
    async with HttpBot(slack, store, ScriptedModel()) as bot:
        status, text = await bot.send(
            {"type": "url_verification", "challenge": "c-123", "token": "t"}
        )
        assert (status, json.loads(text)) == (200, {"challenge": "c-123"})
        mention = event_callback(user_message(f"<@{BOT_USER}> hi", kind="app_mention"))
        assert (await bot.send(mention, secret="wrong-secret"))[0] == 401
        stale = int(time.time()) - 6 * 60
        assert (await bot.send(mention, timestamp=stale))[0] == 401
    assert visible_texts(slack) == []


async def test_canonical_conversation_over_http_with_a_retry(
    slack: SlackServer, store: Store
) -> None:
    model = ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "Return request."}),
            say("What is your order number?"),
            say("Order 42 is eligible."),
        ]
    )
    async with HttpBot(slack, store, model) as bot:
        mention = user_message(f"<@{BOT_USER}> I want to return my order", kind="app_mention")
        payload = event_callback(mention)
        assert (await bot.send(payload))[0] == 200
        assert (await bot.send(payload, retry=1))[0] == 200  # Slack's retry: answered once
        await slack.wait_for(lambda: len(visible_texts(slack)) == 2)
        follow_up = event_callback(user_message("Order 42", thread_ts=mention["ts"]))
        assert (await bot.send(follow_up))[0] == 200
        await slack.wait_for(lambda: len(visible_texts(slack)) == 3)
    assert visible_texts(slack) == [
        "Triage handed you to Returns: Return request.",
        "What is your order number?",
        "Order 42 is eligible.",
    ]
    assert model.calls == 3


async def start_bot(
    slack: SlackServer, chat: ChatCompletionsServer, db: Path
) -> asyncio.subprocess.Process:
    env = clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        SLACK_API_URL=slack.api_url,
        OPENAI_BASE_URL=chat.base_url,
        BOT_DATABASE=str(db),
    )
    process = await bot("slack", env=env)
    await started(process, "Slack: connected over Socket Mode.")
    await slack.connected()
    return process


async def test_a_restarted_process_continues_the_thread(slack: SlackServer, tmp_path: Path) -> None:
    db = tmp_path / "slack.db"
    async with ChatCompletionsServer(respond=canonical) as chat:
        first = await start_bot(slack, chat, db)
        mention = user_message(f"<@{BOT_USER}> I want to return my order", kind="app_mention")
        await slack.push(mention)
        await slack.wait_for(lambda: len(visible_texts(slack)) == 2, within=20)
        errors = await stop(first)
        assert errors.splitlines()[0] == (
            "warning: SLACK_MODERATOR_CHANNEL is not set: escalations still open cases "
            "(`python -m bot cases`), but no card reaches moderators in Slack"
        )

        second = await start_bot(slack, chat, db)
        await slack.push(user_message("Order 42", thread_ts=mention["ts"]))
        await slack.wait_for(lambda: len(visible_texts(slack)) == 3, within=20)
        await stop(second)
    last = [v for v in slack.visible() if v.text != "_working on it…_"][-1]
    assert (last.username, last.text, last.thread_ts) == (
        "Returns",
        "Thanks! Order 42 is eligible; a return label is on its way.",
        mention["ts"],
    )


async def test_start_up_refuses_a_rejected_token(slack: SlackServer, tmp_path: Path) -> None:
    env = clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        SLACK_API_URL=f"http://127.0.0.1:{slack.port}/nope/",
        OPENAI_API_KEY="sk-x",
        BOT_DATABASE=str(tmp_path / "x.db"),
    )
    process = await bot("slack", env=env)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert err.decode() == (
        "error: SLACK_BOT_TOKEN was rejected by Slack (HTTP 404): check the token, or reinstall "
        "the app and copy the new Bot User OAuth Token\n"
    )


async def test_slack_refuses_to_start_without_a_real_model(tmp_path: Path) -> None:
    env = clean_env(SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN="xapp-test")
    process = await bot("slack", env=env)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert err.decode() == (
        "error: `python -m bot slack` needs a real model: set OPENAI_API_KEY for OpenAI, or "
        "OPENAI_BASE_URL for an OpenAI-compatible server (Azure OpenAI, Ollama, vLLM, ...)\n"
    )
