"""Load: 1,000 threads x 5 user turns through the service, messages arriving in bursts.

The model answers each message with its own text after 100 ms plus random jitter. Checks that
every message is answered exactly once, in order within its thread, with no cross-talk, and
prints one JSON line: throughput; p50/p99 of the latency the bot adds to a turn on top of the
model's (from the turn's start), and of the wait behind the same thread's earlier messages; peak
memory.

Usage: python benchmarks/load.py [--threads 1000] [--turns 5] [--latency 0.1] [--jitter 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.engine.loader import load_workflow  # noqa: E402
from bot.models import ModelReply, ModelRequest  # noqa: E402
from bot.service import ConversationService, IncomingMessage, Post  # noqa: E402
from bot.store import SessionKey, sqlite_store  # noqa: E402
from bot.testing import RecordingPlatform  # noqa: E402

WORKFLOW = load_workflow(ROOT / "workflows" / "helpdesk.yaml")


class LoadPlatform(RecordingPlatform):
    """Keeps each thread's replies and when each of its turns started, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[str, list[str]] = defaultdict(list)
        self.began: dict[str, float] = {}

    async def send(self, key: SessionKey, post: Post) -> str | None:
        if post.kind == "reply":
            self.replies[key.thread].append(post.text)
        return None

    @contextlib.asynccontextmanager
    async def working(self, key: SessionKey) -> AsyncIterator[None]:
        self.began[key.thread] = time.perf_counter()  # a thread's turns run one at a time
        yield


class EchoModel:
    """Answers with the user's last message after a jittered delay; records the time slept."""

    def __init__(self, latency: float, jitter: float, seed: int = 7) -> None:
        self.latency, self.jitter = latency, jitter
        self.random = random.Random(seed)
        self.slept: dict[str, float] = {}

    async def complete(self, request: ModelRequest) -> ModelReply:
        text = request.messages[-1].content or ""
        delay = self.latency + self.random.uniform(0, self.jitter)
        await asyncio.sleep(delay)
        self.slept[text] = self.slept.get(text, 0.0) + delay
        return ModelReply(text=f"echo {text}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--jitter", type=float, default=0.05)
    args = parser.parse_args()

    model = EchoModel(args.latency, args.jitter)
    platform = LoadPlatform()
    replies = platform.replies
    added: list[float] = []  # turn time beyond the model's, from the turn's start
    waited: list[float] = []  # time before the turn started: the thread's earlier messages
    with tempfile.TemporaryDirectory() as folder:
        async with sqlite_store(Path(folder) / "load.db") as store:
            service = ConversationService(WORKFLOW, model, store, platform)

            async def send(thread: str, index: int) -> None:
                text = f"{thread}-m{index}"
                started = time.perf_counter()
                await service.handle(IncomingMessage("load", "C", thread, text, event_id=text))
                finished = time.perf_counter()
                began = platform.began[thread]
                waited.append(began - started)
                added.append(finished - began - model.slept.get(text, 0.0))

            async def thread_life(thread: str) -> None:
                # Messages to one thread come in bursts: the first three at once, then the rest.
                first = min(3, args.turns)
                await asyncio.gather(*(send(thread, i) for i in range(first)))
                await asyncio.sleep(random.uniform(0, args.latency))
                await asyncio.gather(*(send(thread, i) for i in range(first, args.turns)))

            started = time.perf_counter()
            await asyncio.gather(*(thread_life(f"t{n}") for n in range(args.threads)))
            elapsed = time.perf_counter() - started

    expected = {
        f"t{n}": [f"echo t{n}-m{i}" for i in range(args.turns)] for n in range(args.threads)
    }
    cross_talk = sum(
        1
        for thread, got in replies.items()
        for text in got
        if not text.startswith(f"echo {thread}-")
    )
    out_of_order = sum(1 for thread, got in replies.items() if got != expected[thread])
    answered = sum(len(got) for got in replies.values())
    turns = args.threads * args.turns
    added.sort()
    waited.sort()
    print(
        json.dumps(
            {
                "mode": "load",
                "threads": args.threads,
                "turns_per_thread": args.turns,
                "model_latency_ms": args.latency * 1000,
                "jitter_ms": args.jitter * 1000,
                "user_turns": turns,
                "answered": answered,
                "answered_exactly_once": answered == turns
                and all(sorted(got) == sorted(expected[t]) for t, got in replies.items()),
                "cross_talk": cross_talk,
                "threads_out_of_order": out_of_order,
                "wall_s": round(elapsed, 2),
                "user_turns_per_s": round(turns / elapsed, 1),
                "added_latency_p50_ms": round(statistics.median(added) * 1000, 2),
                "added_latency_p99_ms": round(added[int(len(added) * 0.99) - 1] * 1000, 2),
                "wait_behind_earlier_messages_p50_ms": round(statistics.median(waited) * 1000, 2),
                "wait_behind_earlier_messages_p99_ms": round(
                    waited[int(len(waited) * 0.99) - 1] * 1000, 2
                ),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
