"""Crash soak: `kill -9` real bot processes at random moments while messages, Slack's retries and
redeliveries are in flight, restart them, and count what the users see.

Two setups, each against the local Slack (tests/fakes/slack_api.py) and a local Chat Completions
server whose model answers "echo <message>" after 20-200 ms, handing the first message with
"return" in it from Triage to Returns:

- `sqlite`: one `python -m bot slack` in Socket Mode on a SQLite file. The local Slack delivers
  again every event not acknowledged within a second, and on every new connection, up to three
  times, as Slack does.
- `postgres`: two `python -m bot slack` in HTTP mode on one PostgreSQL database. Each event goes
  to one process at random; when it fails (refused, error, no answer in 3 s) Slack's retry goes
  to either. A killed process is restarted only after `--down` seconds, so the other one must
  take its threads over once their leases expire.

Prints one JSON line: messages sent, answered exactly once, unanswered, doubled posts (a reply
or handoff line shown twice), replies out of order, placeholders left on screen, and the longest
time from a kill until every message that was waiting then had its answer.

Usage: python benchmarks/crash.py [--mode sqlite|postgres] [--kills N] [--threads N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.chat_completions import ChatCompletionsServer, Delay, Reply, Step  # noqa: E402
from tests.fakes.slack_api import (  # noqa: E402
    BOT_USER,
    SlackServer,
    event_callback,
    sign,
    user_message,
)

SECRET = "crash-soak-secret"
WORKING = "_working on it…_"
PG = os.environ.get("BOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def echo_model(seed: int) -> Callable[[dict[str, Any]], Step]:
    """Triage hands a message with "return" to Returns; every answer is "echo <message>"."""
    rng = random.Random(seed)

    def respond(body: dict[str, Any]) -> Step:
        said = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        tools = {t["function"]["name"] for t in body.get("tools", [])}
        system = body["messages"][0]["content"]
        delay = rng.uniform(0.02, 0.2)
        if (
            system.startswith("You are Triage")
            and "return" in said
            and "handoff_to_Returns" in tools
        ):
            handoff = ("handoff_to_Returns", {"reason": "A return."})
            return Delay(delay, Reply(tool_calls=(handoff,)))
        return Delay(delay, Reply(f"echo {said}"))

    return respond


@dataclass
class Bot:
    """One `python -m bot slack` process, restarted as often as it is killed."""

    env: dict[str, str]
    port: int | None = None
    process: asyncio.subprocess.Process | None = None
    logs: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "slack",
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if not line.startswith(b"Slack:"):
            _, err = await self.process.communicate()
            raise RuntimeError(f"the bot did not start: {line!r} {err.decode()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def reap(self) -> None:
        if self.process is not None:
            _, err = await self.process.communicate()
            self.logs.append(err.decode(errors="replace"))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self) -> None:
        if self.alive and self.process is not None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 25)
        self.kill()
        await self.reap()


@dataclass
class Soak:
    """Threads of messages in bursts, the kills, and what the local Slack ends up showing."""

    mode: str
    threads: int
    messages: int
    kills: int
    down: float
    seed: int
    settle_timeout: float
    lease: float = 15.0
    rng: random.Random = field(init=False)
    sent: dict[str, list[str]] = field(default_factory=dict)  # thread ts -> messages, in order
    kill_times: list[tuple[float, set[str]]] = field(default_factory=list)  # when, what waited
    answered_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def run(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as folder:
            async with (
                SlackServer(redeliver=self.mode == "sqlite", ack_timeout=1.0) as slack,
                ChatCompletionsServer(respond=echo_model(self.seed)) as chat,
            ):
                database = await self._database(folder)
                bots = [self._bot(slack, chat, database) for _ in self._processes()]
                for bot in bots:
                    await bot.start()
                try:
                    watcher = asyncio.create_task(self._watch(slack))
                    killer = asyncio.create_task(self._kill(bots))
                    await asyncio.gather(
                        *(self._thread(n, slack, bots) for n in range(self.threads))
                    )
                    await killer
                    await self._wait_answered(slack)
                    watcher.cancel()
                finally:
                    for bot in bots:
                        await bot.stop()
                    await self._drop(database)
                return self._count(slack, bots)

    def _processes(self) -> range:
        return range(2 if self.mode == "postgres" else 1)

    async def _database(self, folder: str) -> str:
        if self.mode == "sqlite":
            return str(Path(folder) / "soak.db")
        import asyncpg  # type: ignore[import-untyped]

        self.schema = f"soak_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(PG)
        try:
            await conn.execute(f'CREATE SCHEMA "{self.schema}"')
        finally:
            await conn.close()
        return f"{PG}?options=-csearch_path%3D{self.schema}"

    async def _drop(self, database: str) -> None:
        if self.mode == "postgres":
            import asyncpg

            conn = await asyncpg.connect(PG)
            try:
                await conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
            finally:
                await conn.close()

    def _bot(self, slack: SlackServer, chat: ChatCompletionsServer, database: str) -> Bot:
        env = self._env(slack, chat, database)
        if self.mode == "sqlite":
            return Bot(env)
        port = _free_port()
        return Bot(env | {"PORT": str(port)}, port)

    def _env(
        self, slack: SlackServer, chat: ChatCompletionsServer, database: str
    ) -> dict[str, str]:
        ours = ("OPENAI_", "BOT_", "SLACK_", "DISCORD_", "PORT")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
        env |= {
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.api_url,
            "OPENAI_BASE_URL": chat.base_url,
            "OPENAI_MAX_RETRIES": "0",
            "BOT_DATABASE": database,
            "BOT_SWEEP_S": "0.3",
            "BOT_OUTBOX_RETRY_S": "0.2",
            "BOT_LOG_LEVEL": os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        }
        if self.mode == "sqlite":
            return env | {"SLACK_APP_TOKEN": "xapp-test"}
        return env | {"SLACK_SIGNING_SECRET": SECRET, "BOT_LEASE_S": str(self.lease)}

    # Sending, as Slack does

    async def _thread(self, number: int, slack: SlackServer, bots: list[Bot]) -> None:
        await asyncio.sleep(self.rng.uniform(0, 1.0))
        first = user_message(f"<@{BOT_USER}> t{number}-m0", kind="app_mention")
        thread = str(first["ts"])
        self.sent[thread] = []
        events = [first]
        for index in range(1, self.messages):
            text = f"t{number}-m{index}" + (" return" if index == 2 else "")
            events.append(user_message(text, thread_ts=thread))
        index = 0
        while index < len(events):
            burst = events[index : index + self.rng.choice((1, 2, 3))]
            for event in burst:
                self.sent[thread].append(event["text"].removeprefix(f"<@{BOT_USER}> "))
                await self._deliver(event, slack, bots)
                await asyncio.sleep(self.rng.uniform(0.001, 0.02))
            index += len(burst)
            await asyncio.sleep(self.rng.uniform(0.2, 1.2))

    async def _deliver(self, event: dict[str, Any], slack: SlackServer, bots: list[Bot]) -> None:
        if self.mode == "sqlite":
            await slack.push(event)  # waits for a connection; unacknowledged ones come again
            return
        payload = event_callback(event)
        body = json.dumps(payload).encode()
        for attempt in range(8):  # Slack's retries, sooner than Slack's minutes
            live = [bot for bot in bots if bot.alive and bot.port]
            if live:
                bot = self.rng.choice(live)
                headers = sign(SECRET, body)
                if attempt:
                    headers |= {
                        "X-Slack-Retry-Num": str(attempt),
                        "X-Slack-Retry-Reason": "timeout",
                    }
                try:
                    async with (
                        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
                        http.post(
                            f"http://127.0.0.1:{bot.port}/slack/events", data=body, headers=headers
                        ) as response,
                    ):
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
            await asyncio.sleep(0.3 * (attempt + 1))

    # Killing

    async def _kill(self, bots: list[Bot]) -> None:
        for number in range(self.kills):
            # Now and then a longer calm, so that each kill's recovery can also be timed alone.
            await asyncio.sleep(self.rng.uniform(0.3, 1.5) + (3.0 if number % 5 == 4 else 0.0))
            bot = self.rng.choice([b for b in bots if b.alive] or bots)
            for _ in range(100):  # aim at a moment with messages in flight
                sent = (text for texts in self.sent.values() for text in texts)
                waiting = {text for text in sent if text not in self.answered_at}
                if waiting:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(self.rng.uniform(0, 0.15))
            sent = (text for texts in self.sent.values() for text in texts)
            waiting = {text for text in sent if text not in self.answered_at}
            bot.kill()
            self.kill_times.append((time.monotonic(), waiting))
            await bot.reap()
            if self.mode == "postgres":
                await asyncio.sleep(self.down)  # the other process must take over meanwhile
            await bot.start()

    async def _watch(self, slack: SlackServer) -> None:
        while True:
            for message in slack.visible("C1"):
                text = message.text.removeprefix("echo ")
                if text != message.text and text not in self.answered_at:
                    self.answered_at[text] = time.monotonic()
            await asyncio.sleep(0.05)

    async def _wait_answered(self, slack: SlackServer) -> None:
        deadline = time.monotonic() + self.settle_timeout
        while time.monotonic() < deadline:
            replies = {v.text for v in slack.visible("C1")}
            working = any(v.text == WORKING for v in slack.visible("C1"))
            everything = all(f"echo {t}" in replies for texts in self.sent.values() for t in texts)
            if everything and not working:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # room for a late duplicate to show

    def _count(self, slack: SlackServer, bots: list[Bot]) -> dict[str, Any]:
        shown = slack.visible("C1")
        total = exactly = unanswered = doubled = out_of_order = 0
        for thread, texts in self.sent.items():
            in_thread = [v.text for v in shown if v.thread_ts == thread]
            replies = [t.removeprefix("echo ") for t in in_thread if t.startswith("echo ")]
            for text in texts:
                total += 1
                count = replies.count(text)
                exactly += count == 1
                unanswered += count == 0
                doubled += max(0, count - 1)
            handoffs = [t for t in in_thread if "handed you to" in t]
            doubled += max(0, len(handoffs) - 1)
            firsts = [text for text in dict.fromkeys(replies)]
            out_of_order += firsts != [t for t in texts if t in firsts]
        resume = []  # kills whose waiting messages were all answered before the next kill
        ends = [at for at, _ in self.kill_times[1:]] + [float("inf")]
        for (at, waiting), next_kill in zip(self.kill_times, ends, strict=True):
            done = max((self.answered_at.get(text, float("inf")) for text in waiting), default=at)
            if done < next_kill:
                resume.append(done - at)
        return {
            "mode": self.mode,
            "kills": len(self.kill_times),
            "threads": self.threads,
            "messages": total,
            "answered_exactly_once": exactly,
            "unanswered": unanswered,
            "doubled_posts": doubled,
            "threads_out_of_order": out_of_order,
            "stale_placeholders": sum(v.text == WORKING for v in shown),
            "kills_measured_alone": len(resume),
            "resumed_within_s_max": round(max(resume), 2) if resume else None,
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--messages", type=int, default=12)
    parser.add_argument(
        "--down", type=float, default=0.0, help="seconds a killed process stays down"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lease", type=float, default=15.0, help="BOT_LEASE_S (postgres)")
    args = parser.parse_args()
    soak = Soak(
        args.mode, args.threads, args.messages, args.kills, args.down, args.seed, 90.0, args.lease
    )
    print(json.dumps(await soak.run()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
