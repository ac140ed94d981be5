"""Turn benchmarks through `ConversationService` on a SQLite file with a scripted model.

Prints one JSON line per mode:
1. `canonical`: the canonical conversation (2 user turns, 3 model calls, 1 handoff) run N times
   one after another: `per_conversation_ms`.
2. `concurrent`: 500 threads at once, model latency 200 ms: `user_turns_per_s`.
4. `openai` (only when asked, or with `all`): the canonical conversation through
   `OpenAIChatModel` against a local Chat Completions server in another process, and the
   client's own overhead per model call (round trip minus a bare aiohttp POST of the same body).
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
from bot.models import ChatMessage, ChatModel, ModelReply, ModelRequest, ToolCall  # noqa: E402
from bot.service import ConversationService, IncomingMessage  # noqa: E402
from bot.store import SessionKey, Step, Store, sqlite_store  # noqa: E402
from bot.store.values import NewSession  # noqa: E402
from bot.testing import ScriptedModel  # noqa: E402

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
    work: Callable[[ConversationService, Store], Awaitable[dict[str, object]]],
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        async with sqlite_store(Path(folder) / "bench.db") as store:
            return await work(ConversationService(WORKFLOW, model, store), store)


async def canonical(conversations: int) -> dict[str, object]:
    model = ScriptedModel(respond=canonical_reply)

    async def work(service: ConversationService, store: Store) -> dict[str, object]:
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

    async def work(service: ConversationService, store: Store) -> dict[str, object]:
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

    async def work(service: ConversationService, store: Store) -> dict[str, object]:
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
                session = await store.commit(
                    Step(opens=NewSession(key, WORKFLOW.name, "Returns"), items=tuple(filler))
                )
                assert session is not None
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
        "--mode", choices=("canonical", "concurrent", "growth", "openai", "all"), default="all"
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
    if args.mode in ("openai", "all"):
        print(json.dumps(await openai_mode(args.conversations // 5, args.samples)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
