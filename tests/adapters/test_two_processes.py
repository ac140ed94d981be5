"""Two `python -m bot slack` processes (HTTP mode) on one PostgreSQL database.

Events for the same threads go to either process at random, and Slack's retries of an event go
to the other: every message must be answered exactly once, in order, with nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.chat_completions import ChatCompletionsServer, Reply
from tests.fakes.slack_api import BOT_USER, SlackServer, event_callback, sign, user_message
from tests.processes import bot, clean_env, started, stop
from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

SECRET = "two-process-secret"
WORKING = "_working on it…_"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def echo(body: dict[str, object]) -> Reply:
    messages = body["messages"]
    assert isinstance(messages, list)
    return Reply(f"echo {messages[-1]['content']}")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = await postgres_schema()
    assert name is not None
    yield name
    await drop_schema(name)


async def start(
    port: int, slack: SlackServer, chat: ChatCompletionsServer, database: str
) -> asyncio.subprocess.Process:
    env = clean_env(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_MODERATOR_CHANNEL="CMOD",
        PORT=str(port),
        OPENAI_BASE_URL=chat.base_url,
        BOT_DATABASE=database,
    )
    process = await bot("slack", env=env)
    await started(process, "Slack: listening for events")
    return process


async def test_two_processes_answer_each_message_once_in_order(schema: str) -> None:
    database = f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
    ports = [free_port(), free_port()]
    rng = random.Random(11)
    async with SlackServer() as slack, ChatCompletionsServer(respond=echo) as chat:
        bots = [await start(port, slack, chat, database) for port in ports]
        try:
            async with aiohttp.ClientSession() as http:

                async def deliver(payload: dict[str, object], port: int, retry: int = 0) -> None:
                    body = json.dumps(payload).encode()
                    headers = sign(SECRET, body)
                    if retry:
                        headers |= {
                            "X-Slack-Retry-Num": str(retry),
                            "X-Slack-Retry-Reason": "http_timeout",
                        }
                    url = f"http://127.0.0.1:{port}/slack/events"
                    async with http.post(url, data=body, headers=headers) as response:
                        assert response.status == 200

                def answers(thread: str) -> list[str]:
                    return [
                        v.text
                        for v in slack.visible("C1")
                        if v.thread_ts == thread and v.text != WORKING
                    ]

                async def conversation(number: int) -> tuple[str, list[str]]:
                    mention = user_message(f"<@{BOT_USER}> t{number}-m0", kind="app_mention")
                    thread = str(mention["ts"])
                    events = [mention] + [
                        user_message(f"t{number}-m{i}", thread_ts=thread) for i in range(1, 5)
                    ]
                    for count, event in enumerate(events, start=1):
                        payload = event_callback(event)
                        first, other = rng.sample(ports, 2)
                        sends = [deliver(payload, first)]
                        if rng.random() < 0.4:  # Slack retries, and the retry lands elsewhere
                            sends.append(deliver(payload, other, retry=1))
                        await asyncio.gather(*sends)
                        await slack.wait_for(
                            lambda count=count: len(answers(thread)) >= count, within=20
                        )
                    return thread, answers(thread)

                results = await asyncio.gather(*(conversation(n) for n in range(12)))
                await asyncio.sleep(0.5)  # room for any stray duplicate to show up
        finally:
            for process in bots:
                await stop(process)
        for number, (thread, _) in enumerate(results):
            seen = [
                v.text for v in slack.visible("C1") if v.thread_ts == thread and v.text != WORKING
            ]
            assert seen == [f"echo t{number}-m{i}" for i in range(5)]
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch(
            "SELECT s.thread, i.kind, count(*) FROM items i JOIN sessions s ON s.id = i.session_id "
            "GROUP BY s.thread, i.kind"
        )
        unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    finally:
        await conn.close()
    counts = {(row[0], row[1]): row[2] for row in rows}
    assert len({thread for thread, _ in counts}) == 12
    assert all(count == 5 for count in counts.values()), counts  # 5 user + 5 agent each
    assert unsent == 0
