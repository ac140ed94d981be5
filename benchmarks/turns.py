"""Turn benchmarks through `ConversationService` on a SQLite file with a scripted model.

Prints one JSON line per mode:
1. `canonical`: the canonical conversation (2 user turns, 3 model calls, 1 handoff) run N times
   one after another: `per_conversation_ms`.
2. `concurrent`: 500 threads at once, model latency 200 ms: `user_turns_per_s`.
3. `growth`: per-turn cost with 10 vs 1,000 messages already stored (each sample a thread of
   exactly that size; medians): `growth_ratio` for a thread in use (its window cached), and
   `first_turn_growth_ratio` for the first turn after a restart (window read from SQLite).

Usage: python benchmarks/turns.py [--mode canonical|concurrent|growth] [--conversations N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.engine.loader import load_workflow  # noqa: E402
from bot.engine.transcript import AgentReply, UserTurn  # noqa: E402
from bot.models import ChatModel, ModelReply, ModelRequest, ToolCall  # noqa: E402
from bot.models.scripted import ScriptedModel  # noqa: E402
from bot.service import ConversationService, IncomingMessage  # noqa: E402
from bot.store import SessionKey, SQLiteStore  # noqa: E402

WORKFLOW = load_workflow(ROOT / "workflows" / "ecommerce.yaml")
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
    work: Callable[[ConversationService, SQLiteStore], Awaitable[dict[str, object]]],
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        async with SQLiteStore(Path(folder) / "bench.db") as store:
            return await work(ConversationService(WORKFLOW, model, store), store)


async def canonical(conversations: int) -> dict[str, object]:
    model = ScriptedModel(respond=canonical_reply)

    async def work(service: ConversationService, store: SQLiteStore) -> dict[str, object]:
        for warm in range(20):
            await conversation(service, f"warm-{warm}")
        started = time.perf_counter()
        for number in range(conversations):
            await conversation(service, f"c{number}")
        elapsed = time.perf_counter() - started
        return {
            "mode": "canonical",
            "conversations": conversations,
            "model_calls_per_conversation": 3,
            "per_conversation_ms": round(elapsed / conversations * 1000, 3),
        }

    return await with_service(model, work)


async def concurrent(threads: int, latency: float) -> dict[str, object]:
    model = ScriptedModel(respond=canonical_reply, latency=latency)

    async def work(service: ConversationService, store: SQLiteStore) -> dict[str, object]:
        started = time.perf_counter()
        await asyncio.gather(*(conversation(service, f"t{n}") for n in range(threads)))
        elapsed = time.perf_counter() - started
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
        }

    return await with_service(model, work)


async def growth(samples: int) -> dict[str, object]:
    model = ScriptedModel(respond=lambda request: ModelReply(text="Noted."))

    async def work(service: ConversationService, store: SQLiteStore) -> dict[str, object]:
        cold: dict[int, float] = {}
        warm: dict[int, float] = {}
        for size in (10, 1000):
            filler = [
                UserTurn(f"question {i}") if i % 2 == 0 else AgentReply("Returns", f"answer {i}")
                for i in range(size)
            ]
            firsts, seconds = [], []
            for sample in range(samples):
                key = SessionKey("bench", "C1", f"size-{size}-{sample}")
                session = await store.open_session(key, WORKFLOW.name, "Returns")
                await store.append(session.id, filler)
                for timings in (firsts, seconds):
                    started = time.perf_counter()
                    await service.handle(IncomingMessage("bench", "C1", key.thread, "one more"))
                    timings.append(time.perf_counter() - started)
            cold[size] = statistics.median(firsts)
            warm[size] = statistics.median(seconds)
        return {
            "mode": "growth",
            "samples": samples,
            "per_turn_ms_at_10": round(warm[10] * 1000, 3),
            "per_turn_ms_at_1000": round(warm[1000] * 1000, 3),
            "growth_ratio": round(warm[1000] / warm[10], 2),
            "first_turn_after_restart_ms_at_10": round(cold[10] * 1000, 3),
            "first_turn_after_restart_ms_at_1000": round(cold[1000] * 1000, 3),
            "first_turn_growth_ratio": round(cold[1000] / cold[10], 2),
        }

    return await with_service(model, work)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode", choices=("canonical", "concurrent", "growth", "all"), default="all"
    )
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    if args.mode in ("canonical", "all"):
        print(json.dumps(await canonical(args.conversations)), flush=True)
    if args.mode in ("concurrent", "all"):
        print(json.dumps(await concurrent(args.threads, args.latency)), flush=True)
    if args.mode in ("growth", "all"):
        print(json.dumps(await growth(args.samples)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
