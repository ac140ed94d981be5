"""Turn benchmarks through `ConversationService` on a SQLite file with a scripted model.

Prints one JSON line per mode (and per `synchronous` setting where it matters):
1. `canonical`: the canonical conversation (2 user turns, 3 model calls, 1 handoff) run N times
   one after another: `per_conversation_ms`, and commits per conversation.
2. `concurrent`: 500 threads at once, model latency 200 ms: `user_turns_per_s` and
   `share_of_ideal` (the ideal: every conversation takes only its three model calls).
3. `growth`: per-turn cost with 10, 1,000 and 10,000 messages already stored (medians):
   `growth_ratio` (1,000 vs 10, window cached), and `restart_growth_ratio`, the first turn
   after a restart (a new store and service: nothing cached) over a warm turn of the same
   thread, the worse of 1,000 and 10,000 items.
4. `memory`: 10,000 threads, two turns each (20,000 turns): RSS after the first turn of every
   thread (`rss_mb_10k_threads`) and after the second (flat means the caches are bounded).
5. `openai` (only when asked, or with `all`): the canonical conversation through
   `OpenAIChatModel` against a local Chat Completions server in another process, and the
   client's own overhead per model call (round trip minus a bare aiohttp POST of the same body).

Canonical and concurrent run with `PRAGMA synchronous` NORMAL (the bot's setting) and FULL.
`BENCH_ROOT=/path/to/other/checkout` runs the same benchmark on another tree's `bot` package
(before/after in one run).

Usage: python benchmarks/turns.py [--mode canonical|concurrent|growth|memory|openai|all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BENCH_ROOT") or HERE)
sys.path.insert(0, str(ROOT))

from bot.engine.loader import load_workflow  # noqa: E402
from bot.engine.transcript import AgentReply, UserTurn  # noqa: E402
from bot.models import ChatMessage, ChatModel, ModelReply, ModelRequest, ToolCall  # noqa: E402
from bot.service import ConversationService, IncomingMessage  # noqa: E402
from bot.store import SessionKey, Step, Store, sqlite_store  # noqa: E402
from bot.store.values import NewSession  # noqa: E402
from bot.testing import ScriptedModel  # noqa: E402

WORKFLOW = load_workflow(HERE / "workflows" / "ecommerce.yaml")
SYNC = ("NORMAL", "FULL")

HANDOFF = ToolCall("call_1", "handoff_to_Returns", '{"reason": "The customer wants a return."}')


def canonical_reply(request: ModelRequest) -> ModelReply:
    """Triage hands off; Returns asks for the order number, then answers."""
    if request.agent == "Triage":
        return ModelReply(tool_calls=(HANDOFF,), finish_reason="tool_calls")
    if request.messages[-1].content == "Order 42":
        return ModelReply(text="Thanks! Order 42 is eligible; a return label is on its way.")
    return ModelReply(text="I can help with that. What is your order number?")


async def conversation(service: ConversationService, thread: str) -> None:
    for index, text in enumerate(("I want to return my order", "Order 42")):
        result = await service.handle(
            IncomingMessage("bench", "C1", thread, text, event_id=f"{thread}-{index}")
        )
        assert result.posts, f"no reply in {thread}"


async def with_service(
    model: ChatModel,
    work: Callable[[ConversationService, Store], Awaitable[dict[str, object]]],
    synchronous: str = "NORMAL",
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        async with sqlite_store(Path(folder) / "bench.db") as store:
            await pragma(store, f"synchronous = {synchronous}")
            result = await work(ConversationService(WORKFLOW, model, store), store)
            return {"synchronous": synchronous, **result}


async def pragma(store: Store, setting: str) -> None:
    """Set a pragma on the store's connection (this tree's driver, or an older one's)."""
    driver: Any = store.driver
    if hasattr(driver, "query"):
        await driver.query(f"PRAGMA {setting}")
    else:
        await driver.connection.execute(f"PRAGMA {setting}")


def commits(store: Store) -> int | None:
    """Transactions the store committed so far (None: a driver that does not count them)."""
    return getattr(store.driver, "commits", None)


async def canonical(conversations: int, synchronous: str) -> dict[str, object]:
    model = ScriptedModel(respond=canonical_reply)

    async def work(service: ConversationService, store: Store) -> dict[str, object]:
        for warm in range(20):
            await conversation(service, f"warm-{warm}")
        before = commits(store)
        started = time.perf_counter()
        for number in range(conversations):
            await conversation(service, f"c{number}")
        elapsed = time.perf_counter() - started
        after = commits(store)
        return {
            "mode": "canonical",
            "conversations": conversations,
            "model_calls_per_conversation": 3,
            "per_conversation_ms": round(elapsed / conversations * 1000, 3),
            "commits_per_conversation": None
            if before is None or after is None
            else round((after - before) / conversations, 2),
        }

    return await with_service(model, work, synchronous)


async def concurrent(threads: int, latency: float, synchronous: str) -> dict[str, object]:
    model = ScriptedModel(respond=canonical_reply, latency=latency)

    async def work(service: ConversationService, store: Store) -> dict[str, object]:
        before = commits(store)
        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(conversation(service, f"t{n}") for n in range(threads)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = commits(store)
        turns = threads * 2
        floor = 3 * latency  # the model time of one conversation, the best possible wall time
        return {
            "mode": "concurrent",
            "threads": threads,
            "model_latency_ms": latency * 1000,
            "user_turns": turns,
            "wall_s": round(elapsed, 3),
            "user_turns_per_s": round(turns / elapsed, 1),
            "ceiling_user_turns_per_s": round(turns / floor, 1),
            "share_of_ideal": round(floor / elapsed, 3),
            "cpu_ms_per_turn": round(cpu / turns * 1000, 3),
            "commits_per_turn": None
            if before is None or after is None
            else round((after - before) / turns, 3),
        }

    return await with_service(model, work, synchronous)


SIZES = (10, 1000, 10_000)


async def growth(samples: int) -> dict[str, object]:
    """Warm turns of threads of each size, then a restart (a new store and service on the
    same file), then the first turn of each thread again."""
    model = ScriptedModel(respond=lambda request: ModelReply(text="Noted."))
    warm: dict[int, list[float]] = {size: [] for size in SIZES}
    cold: dict[int, list[float]] = {size: [] for size in SIZES}

    async def turn(service: ConversationService, thread: str) -> float:
        started = time.perf_counter()
        await service.handle(IncomingMessage("bench", "C1", thread, "one more"))
        return time.perf_counter() - started

    def count(size: int) -> int:
        return samples if size < 10_000 else max(5, samples // 10)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        async with sqlite_store(path) as store:
            service = ConversationService(WORKFLOW, model, store)
            for size in SIZES:
                filler = tuple(
                    UserTurn(f"question {i}")
                    if i % 2 == 0
                    else AgentReply("Returns", f"answer {i}")
                    for i in range(size)
                )
                for sample in range(count(size)):
                    key = SessionKey("bench", "C1", f"size-{size}-{sample}")
                    opens = NewSession(key, WORKFLOW.name, "Returns")
                    assert await store.commit(Step(opens=opens, items=filler)) is not None
                    await turn(service, key.thread)  # its window is read, then cached
                    warm[size].append(await turn(service, key.thread))
        async with sqlite_store(path) as store:  # the restart
            service = ConversationService(WORKFLOW, model, store)
            await turn(service, "warm-up")  # the process's own first turn is not a thread's
            for size in SIZES:
                for sample in range(count(size)):
                    cold[size].append(await turn(service, f"size-{size}-{sample}"))
    ms = {size: statistics.median(warm[size]) * 1000 for size in SIZES}
    first = {size: statistics.median(cold[size]) * 1000 for size in SIZES}
    return {
        "mode": "growth",
        "samples": samples,
        **{f"per_turn_ms_at_{size}": round(ms[size], 3) for size in SIZES},
        "growth_ratio": round(ms[1000] / ms[10], 2),
        **{f"first_turn_after_restart_ms_at_{size}": round(first[size], 3) for size in SIZES},
        **{f"restart_ratio_at_{size}": round(first[size] / ms[size], 2) for size in SIZES},
        "restart_growth_ratio": round(max(first[size] / ms[size] for size in (1000, 10_000)), 2),
    }


async def memory(threads: int, text_bytes: int, rounds: int = 2) -> dict[str, object]:
    """`rounds` turns in each of `threads` threads, 500 at a time; RSS after each round."""
    text = ("x" * text_bytes) if text_bytes else None

    def reply(request: ModelRequest) -> ModelReply:
        return ModelReply(text=text or "Noted, thank you.")

    model = ScriptedModel(respond=reply)
    marks: list[float] = []

    async def work(service: ConversationService, store: Store) -> dict[str, object]:
        marks.append(rss_mb())
        for round_ in range(rounds):
            for start in range(0, threads, 500):
                await asyncio.gather(
                    *(
                        service.handle(
                            IncomingMessage("bench", "C1", f"m{n}", text or f"hello {round_}")
                        )
                        for n in range(start, min(start + 500, threads))
                    )
                )
            marks.append(rss_mb())
        return {
            "mode": "memory",
            "threads": threads,
            "turns": threads * rounds,
            "message_bytes": text_bytes or 20,
            "rss_mb_start": round(marks[0], 1),
            "rss_mb_10k_threads": round(marks[1], 1),
            "rss_mb_after_20k_turns": round(marks[2], 1),
            "rss_mb_growth_second_10k_turns": round(marks[2] - marks[1], 1),
            "rss_mb_after_each_round": [round(mark, 1) for mark in marks[1:]],
            "window_cache_mb": round(getattr(service.turns.windows, "bytes", 0) / 2**20, 1),
            "windows_cached": len(service.turns.windows),
        }

    return await with_service(model, work)


def rss_mb() -> float:
    """This process's resident memory (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def openai_mode(conversations: int, calls: int) -> dict[str, object]:
    import aiohttp

    from bot.models.openai import OpenAIChatModel
    from bot.settings import load_settings

    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.chat_completions",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        port = int((await server.stdout.readline()).decode())
        base_url = f"http://127.0.0.1:{port}/v1"
        settings = load_settings(
            {"OPENAI_BASE_URL": base_url, "OPENAI_MODEL": "bench"}, env_file=None
        )
        model = OpenAIChatModel.from_settings(settings)
        try:
            result = await with_service(model, lambda s, _: _timed_conversations(s, conversations))
            request = ModelRequest(
                "Returns",
                (ChatMessage("system", "You are Returns, ..."), ChatMessage("user", "Order 42")),
            )
            body = {
                "model": "bench",
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            }
            client_ms = await _per_call(lambda: model.complete(request), calls)
            async with aiohttp.ClientSession() as http:

                async def raw() -> None:
                    async with http.post(f"{base_url}/chat/completions", json=body) as response:
                        await response.json()

                raw_ms = await _per_call(raw, calls)
        finally:
            await model.aclose()
    finally:
        server.terminate()
        await server.wait()
    return {
        "mode": "openai",
        **result,
        "model_call_ms": round(client_ms, 3),
        "bare_http_post_ms": round(raw_ms, 3),
        "client_overhead_per_call_ms": round(client_ms - raw_ms, 3),
    }


async def _timed_conversations(service: ConversationService, count: int) -> dict[str, object]:
    for warm in range(10):
        await conversation(service, f"warm-{warm}")
    started = time.perf_counter()
    for number in range(count):
        await conversation(service, f"o{number}")
    elapsed = time.perf_counter() - started
    return {"conversations": count, "per_conversation_ms": round(elapsed / count * 1000, 3)}


async def _per_call(call: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(20):
        await call()
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=("canonical", "concurrent", "growth", "memory", "openai", "all"),
        default="all",
    )
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--memory-threads", type=int, default=10_000)
    parser.add_argument("--message-bytes", type=int, default=0, help="memory: text of each post")
    parser.add_argument("--rounds", type=int, default=2, help="memory: turns per thread")
    parser.add_argument("--sync", choices=(*SYNC, "both"), default="both")
    args = parser.parse_args()
    modes = SYNC if args.sync == "both" else (args.sync,)
    if args.mode in ("canonical", "all"):
        for mode in modes:
            print(json.dumps(await canonical(args.conversations, mode)), flush=True)
    if args.mode in ("concurrent", "all"):
        for mode in modes:
            print(json.dumps(await concurrent(args.threads, args.latency, mode)), flush=True)
    if args.mode in ("growth", "all"):
        print(json.dumps(await growth(args.samples)), flush=True)
    if args.mode in ("memory", "all"):
        result = await memory(args.memory_threads, args.message_bytes, args.rounds)
        print(json.dumps(result), flush=True)
    if args.mode in ("openai", "all"):
        print(json.dumps(await openai_mode(args.conversations // 5, args.samples)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
