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

Each thread sends at least `--messages` messages, in bursts of 1-3 about every `--pace` seconds,
and goes on until the last kill is done, so that every kill has work to cut into. Each kill
waits (at most 10 s) for a moment with a message sent and not answered yet; every third one
waits (at most 5 s of that) for such a moment inside the window a post may be lost in: the
local Slack holds its answer to one `chat.postMessage`/`chat.update` in three for up to
`--hold` seconds after showing the message, and the kill lands then, so the next process finds
that post in doubt and must look it up (`conversations.replies`) instead of posting it again.
`--dump DIR` writes the bots' logs, every Web API call and a timeline of each message (sent,
pushed, acknowledged, seen delivered again, answer shown) and of the kills, to explain a failure.

Prints one JSON line: messages sent, answered exactly once, unanswered, doubled posts (a reply
or handoff line shown twice), threads with replies out of order, and how many of those only
because the earlier message reached the bots after the later one (`..._as_received`: acknowledged,
so stored, later; typically its delivery was cut by a kill and came again after the later one,
the window the README names), placeholders left on screen; how many kills had work in flight (a
message waiting for its answer, or a post of the killed process shown and not answered yet),
how many landed with such a post in doubt (and how many posts), how many look-ups
(`conversations.replies`) the bots made, and how many posts were sent twice all the same (by the
outbox post their metadata names); and, over the kills that had messages waiting and whose
answers all came before the next kill (`kills_measured_alone`), the longest and the median time
from the kill until the last of those answers was shown.

Usage: python benchmarks/crash.py [--mode sqlite|postgres] [--kills N] [--threads N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
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
    _drains: list[asyncio.Task[bytes]] = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.env["SLACK_BOT_TOKEN"]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

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
        # Read its output all along: a full pipe would stop the process in the middle of a log.
        assert self.process.stderr is not None
        self._drains = [
            asyncio.create_task(self.process.stdout.read()),
            asyncio.create_task(self.process.stderr.read()),
        ]

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def reap(self) -> None:
        if self.process is not None:
            await self.process.wait()
            if self._drains:
                _, err = await asyncio.gather(*self._drains)
                self._drains = []
                self.logs.append(f"--- pid {self.process.pid}\n" + err.decode(errors="replace"))

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


@dataclass(frozen=True)
class Kill:
    """One `kill -9`: when, the messages sent and not answered then, and the posts of the killed
    process the local Slack had shown without answering yet (posts in doubt)."""

    at: float
    waiting: frozenset[str]
    in_doubt: int
    aimed: bool  # it waited for a post in doubt


@dataclass
class Soak:
    """Threads of messages in bursts, the kills, and what the local Slack ends up showing."""

    mode: str
    threads: int
    messages: int  # at least this many per thread; they go on until the last kill is done
    kills: int
    down: float
    seed: int
    settle_timeout: float
    lease: float = 15.0
    pace: float = 2.0  # mean seconds between a thread's bursts
    hold: float = 0.25  # the local Slack answers one post in three up to this long after showing it
    dump: Path | None = None  # where to write the bots' logs, the Web API calls and the kills
    rng: random.Random = field(init=False)
    holds: random.Random = field(init=False)
    sent: dict[str, list[str]] = field(default_factory=dict)  # thread ts -> messages, in order
    kill_log: list[Kill] = field(default_factory=list)
    answered_at: dict[str, float] = field(default_factory=dict)
    killing: bool = True
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # for --dump
    _scanned: int = 0
    _envelopes: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> text, attempt
    _acked: int = 0
    _accepted: list[str] = field(default_factory=list)  # postgres: messages in HTTP 200 order

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.holds = random.Random(self.seed + 1)

    async def run(self) -> dict[str, Any]:
        logging.getLogger("aiohttp.server").addFilter(_quiet_cut_requests)
        with tempfile.TemporaryDirectory() as folder:
            async with (
                SlackServer(
                    redeliver=self.mode == "sqlite",
                    ack_timeout=1.0,
                    answer_delay=self._answer_delay if self.hold > 0 else None,
                ) as slack,
                ChatCompletionsServer(respond=echo_model(self.seed)) as chat,
            ):
                database = await self._database(folder)
                bots = [self._bot(slack, chat, database, n) for n in self._processes()]
                try:
                    for bot in bots:
                        await bot.start()
                    self.killing = True
                    watcher = asyncio.create_task(self._watch(slack))
                    killer = asyncio.create_task(self._kill(bots, slack))
                    await asyncio.gather(
                        *(self._thread(n, slack, bots) for n in range(self.threads)), killer
                    )
                    await self._wait_answered(slack)
                    watcher.cancel()
                finally:
                    self.killing = False
                    for bot in bots:
                        await bot.stop()
                    await self._drop(database)
                    if self.dump is not None:
                        self._write_dump(slack, bots)
                return self._count(slack, bots)

    def _answer_delay(self, method: str, args: dict[str, Any]) -> float:
        """How long the local Slack holds its answer to a post it shows: one in three, a while."""
        return self.holds.uniform(0, self.hold) if self.holds.random() < 1 / 3 else 0.0

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

    def _bot(
        self, slack: SlackServer, chat: ChatCompletionsServer, database: str, number: int
    ) -> Bot:
        # A token of its own, so that the local Slack tells whose posts it holds.
        env = self._env(slack, chat, database) | {"SLACK_BOT_TOKEN": f"xoxb-soak-{number}"}
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
        """At least `messages` messages, in bursts at a steady pace, until the kills are over."""
        await asyncio.sleep(self.rng.uniform(0, 1.0))
        first = user_message(f"<@{BOT_USER}> t{number}-m0", kind="app_mention")
        thread = str(first["ts"])
        self.sent[thread] = []
        index = 0
        while index < self.messages or self.killing:
            for _ in range(self.rng.choice((1, 2, 3))):
                text = f"t{number}-m{index}" + (" return" if index == 2 else "")
                event = first if index == 0 else user_message(text, thread_ts=thread)
                self.sent[thread].append(text)
                self._note("sent", text)
                await self._deliver(event, slack, bots)
                await asyncio.sleep(self.rng.uniform(0.001, 0.02))
                index += 1
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.pace)

    async def _deliver(self, event: dict[str, Any], slack: SlackServer, bots: list[Bot]) -> None:
        text = str(event["text"]).removeprefix(f"<@{BOT_USER}> ")
        if self.mode == "sqlite":
            # It waits for a connection; what is not acknowledged comes again.
            self._envelopes[await slack.push(event)] = (text, 0)
            self._note("pushed", text)
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
                        self._note(f"HTTP {response.status} from :{bot.port}", text)
                        if response.status == 200:
                            self._accepted.append(text)
                            return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self._note(f"{type(exc).__name__} from :{bot.port}", text)
            await asyncio.sleep(0.3 * (attempt + 1))

    # Killing

    async def _kill(self, bots: list[Bot], slack: SlackServer) -> None:
        try:
            for number in range(self.kills):
                # Now and then a longer calm, so that a kill's recovery can be timed alone.
                await asyncio.sleep(self.rng.uniform(0.3, 1.5) + (3.0 if number % 5 == 4 else 0))
                at_post = number % 3 == 1
                bot = await self._aim(bots, slack, at_post)
                waiting = frozenset(self._waiting(slack))
                in_doubt = len(slack.held.get(bot.token, ()))
                bot.kill()
                self.kill_log.append(Kill(time.monotonic(), waiting, in_doubt, at_post))
                self._note(f"kill #{number}", f"{bot.token} pid {bot.pid}, waiting {len(waiting)}")
                await bot.reap()
                if self.mode == "postgres":
                    await asyncio.sleep(self.down)  # the other process must take over meanwhile
                await bot.start()
                self._note("started", f"{bot.token} pid {bot.pid}")
        finally:
            self.killing = False  # the threads stop sending

    async def _aim(self, bots: list[Bot], slack: SlackServer, at_post: bool) -> Bot:
        """Wait for a moment to kill a process with a message in flight: and with a post of its
        shown and not answered yet (`at_post`, for at most 5 s), or else any (at most 10 s)."""
        alive = [b for b in bots if b.alive] or bots
        start = time.monotonic()
        while at_post and time.monotonic() < start + 5:
            holding = [b for b in alive if slack.held.get(b.token)]
            if holding and self._waiting(slack):
                return self.rng.choice(holding)
            await asyncio.sleep(0.002)
        bot = self.rng.choice(alive)
        while time.monotonic() < start + 10:
            if self._waiting(slack):
                await asyncio.sleep(self.rng.uniform(0, 0.15))  # some moment of that work
                if self._waiting(slack):
                    break
            await asyncio.sleep(0.01)
        return bot

    def _waiting(self, slack: SlackServer) -> list[str]:
        """The messages sent and not answered yet, as the local Slack shows them now."""
        self._scan(slack)
        sent = (text for texts in self.sent.values() for text in texts)
        return [text for text in sent if text not in self.answered_at]

    def _scan(self, slack: SlackServer) -> None:
        """Note when each answer was first shown (posted, or put in a placeholder's place)."""
        calls = slack.calls
        now = time.monotonic()
        for call in calls[self._scanned :]:
            if call.method in ("chat.postMessage", "chat.update"):
                text = str(call.args.get("text", ""))
                if text.startswith("echo ") and call.args.get("channel") == "C1":
                    self.answered_at.setdefault(text.removeprefix("echo "), now)
        self._scanned = len(calls)

    async def _watch(self, slack: SlackServer) -> None:
        while True:
            self._scan(slack)
            for envelope_id in slack.acks[self._acked :]:
                self._note("acked", self._envelopes.get(envelope_id, ("?", 0))[0])
            self._acked = len(slack.acks)
            for envelope_id, (envelope, _) in list(slack.unacked.items()):
                text, attempt = self._envelopes.get(envelope_id, ("?", 0))
                if envelope["retry_attempt"] > attempt:
                    self._envelopes[envelope_id] = (text, envelope["retry_attempt"])
                    self._note(f"delivered again (retry {envelope['retry_attempt']})", text)
            await asyncio.sleep(0.02)

    def _note(self, what: str, detail: str) -> None:
        self.timeline.append((time.monotonic(), what, detail))

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
        total = exactly = unanswered = doubled = out_of_order = unexplained = 0
        arrived = self._arrival(slack)
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
            unexplained += _reversed_as_received(texts, firsts, arrived) is False
        # Kills with messages waiting whose answers all came before the next kill.
        resume = []
        ends = [kill.at for kill in self.kill_log[1:]] + [float("inf")]
        for kill, next_kill in zip(self.kill_log, ends, strict=True):
            done = max((self.answered_at.get(t, float("inf")) for t in kill.waiting), default=0)
            if kill.waiting and done < next_kill:
                resume.append(done - kill.at)
        return {
            "mode": self.mode,
            "kills": len(self.kill_log),
            "threads": self.threads,
            "messages": total,
            "answered_exactly_once": exactly,
            "unanswered": unanswered,
            "doubled_posts": doubled,
            "threads_out_of_order": out_of_order,
            "threads_out_of_order_as_received": out_of_order - unexplained,
            "stale_placeholders": sum(v.text == WORKING for v in shown),
            "kills_with_work_in_flight": sum(bool(k.waiting or k.in_doubt) for k in self.kill_log),
            "kills_in_post_window": sum(kill.in_doubt > 0 for kill in self.kill_log),
            "posts_in_doubt": sum(kill.in_doubt for kill in self.kill_log),
            "lookups": sum(call.method == "conversations.replies" for call in slack.calls),
            "posts_sent_twice": _sent_twice(slack),
            "kills_measured_alone": len(resume),
            "resumed_within_s_max": round(max(resume), 2) if resume else None,
            "resumed_within_s_median": round(statistics.median(resume), 2) if resume else None,
        }

    def _arrival(self, slack: SlackServer) -> dict[str, int]:
        """Each message's rank in the order the bots acknowledged it, i.e. stored it: the first
        acknowledgement over Socket Mode, or the HTTP 200 (postgres)."""
        if self.mode == "postgres":
            order = self._accepted
        else:
            order = [self._envelopes.get(e, ("", 0))[0] for e in slack.acks]
        arrived: dict[str, int] = {}
        for text in order:
            arrived.setdefault(text, len(arrived))
        return arrived

    def _write_dump(self, slack: SlackServer, bots: list[Bot]) -> None:
        """The bots' logs, every Web API call, what was sent, and the kills (to investigate)."""
        assert self.dump is not None
        self.dump.mkdir(parents=True, exist_ok=True)
        (self.dump / "bots.log").write_text("".join(log for bot in bots for log in bot.logs))
        with (self.dump / "calls.jsonl").open("w") as out:
            for call in slack.calls:
                args = {k: v for k, v in call.args.items() if k != "blocks"}
                row = {"method": call.method, "token": call.token, "ts": call.ts, "args": args}
                out.write(json.dumps(row, default=str) + "\n")
        kills = [
            {"at": k.at, "waiting": sorted(k.waiting), "in_doubt": k.in_doubt, "aimed": k.aimed}
            for k in self.kill_log
        ]
        answered = self.answered_at
        events = self.timeline + [(at, "answer shown", text) for text, at in answered.items()]
        start = min((at for at, _, _ in events), default=0.0)
        (self.dump / "timeline.txt").write_text(
            "".join(f"{at - start:9.3f} {what}: {detail}\n" for at, what, detail in sorted(events))
        )
        (self.dump / "soak.json").write_text(
            json.dumps({"sent": self.sent, "kills": kills, "answered_at": answered}, indent=1)
        )


def _reversed_as_received(
    texts: list[str], answered: list[str], arrived: dict[str, int]
) -> bool | None:
    """None when a thread's answers are in the users' order; True when every pair answered in
    reverse reached the bots in reverse too (the window the README names: messages that arrive
    further apart than the settle window are answered in the order they arrived); False when a
    pair was answered in reverse although the earlier one arrived first (or when unknown)."""
    place = {text: n for n, text in enumerate(answered)}
    said = [t for t in texts if t in place]
    pairs = [(a, b) for i, a in enumerate(said) for b in said[i + 1 :] if place[b] < place[a]]
    if not pairs:
        return None
    unknown = len(arrived) + 1
    return all(arrived.get(b, unknown) < arrived.get(a, -1) for a, b in pairs)


def _sent_twice(slack: SlackServer) -> int:
    """Outbox posts (by the post and part their metadata names) shown by more than one
    `chat.postMessage`: what a look-up that missed a post in doubt would leave."""
    shown: Counter[tuple[str, int]] = Counter()
    for call in slack.posts("C1"):
        metadata = call.args.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        tag = metadata.get("event_payload") or {}
        if call.ts and tag:
            shown[(str(tag.get("post")), int(tag.get("part", 0)))] += 1
    return sum(count - 1 for count in shown.values())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quiet_cut_requests(record: logging.LogRecord) -> bool:
    """The local servers' log of a request cut short by a kill is expected here, not news."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, ConnectionResetError)


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
    parser.add_argument(
        "--pace", type=float, default=2.0, help="mean seconds between a thread's bursts"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0.25,
        help="the local Slack answers one post in three up to this many seconds after showing it",
    )
    parser.add_argument("--dump", type=Path, help="folder for the bots' logs and the calls")
    args = parser.parse_args()
    soak = Soak(
        args.mode,
        args.threads,
        args.messages,
        args.kills,
        args.down,
        args.seed,
        90.0,
        args.lease,
        pace=args.pace,
        hold=args.hold,
        dump=args.dump,
    )
    print(json.dumps(await soak.run()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
