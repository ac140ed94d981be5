"""The canonical conversation on Switchboard and on its peers, in one run, as ratios.

The same conversation everywhere (2 user turns, 3 model calls, 1 handoff: Triage hands off to
Returns, which asks for the order number, then answers), a scripted model, and each framework's
own durable store:

- Switchboard: `ConversationService` on a SQLite file (WAL, synchronous=NORMAL);
- the OpenAI Agents SDK: `Runner.run` with a `SQLiteSession` on a file;
- Microsoft Agent Framework: `HandoffBuilder` with `FileCheckpointStorage`.

Prints one JSON line per framework and mode: `per_conversation_ms` (one conversation after
another) and, with `--concurrent`, `user_turns_per_s` and `share_of_ideal` for 500 threads at once
with a 200 ms model; each with its ratio to Switchboard. A peer that is not installed is skipped
with one line (`pip install -e '.[bench]'` installs both).

Usage: python benchmarks/peers.py [--conversations 200] [--concurrent] [--threads 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.turns import WORKFLOW, canonical_reply, conversation
from bot.service import ConversationService
from bot.store import sqlite_store
from bot.testing import ScriptedModel

QUESTION = "I can help with that. What is your order number?"
ANSWER = "Thanks! Order 42 is eligible; a return label is on its way."
TURNS = ("I want to return my order", "Order 42")
Conversation = Callable[[str], Awaitable[None]]
Setup = Callable[[Path, float, contextlib.AsyncExitStack], Awaitable[Conversation]]


def reply_to(last_user: str) -> str:
    """What Returns says to the customer's last message."""
    return ANSWER if last_user == "Order 42" else QUESTION


async def switchboard(
    folder: Path, latency: float, stack: contextlib.AsyncExitStack
) -> Conversation:
    store = await stack.enter_async_context(sqlite_store(folder / "switchboard.db"))
    service = ConversationService(
        WORKFLOW, ScriptedModel(respond=canonical_reply, latency=latency), store
    )

    async def run(thread: str) -> None:
        await conversation(service, thread)

    return run


async def agents_sdk(folder: Path, latency: float, _: contextlib.AsyncExitStack) -> Conversation:
    """The OpenAI Agents SDK: a scripted `Model`, a handoff, and a `SQLiteSession` file."""
    from agents import Agent, ModelResponse, Runner, SQLiteSession, Usage
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class Scripted(Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self.name = name

        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            if latency:
                await asyncio.sleep(latency)
            handoffs = args[5] if len(args) > 5 else kwargs.get("handoffs", [])
            if self.name == "Triage":
                call = ResponseFunctionToolCall(
                    type="function_call",
                    call_id=f"call_{uuid.uuid4().hex[:8]}",
                    name=handoffs[0].tool_name,
                    arguments="{}",
                )
                return ModelResponse(output=[call], usage=Usage(), response_id=None)
            items = args[1] if len(args) > 1 else kwargs["input"]
            last = next((i.get("content") for i in reversed(items) if i.get("role") == "user"), "")
            text = ResponseOutputText(type="output_text", text=reply_to(str(last)), annotations=[])
            message = ResponseOutputMessage(
                id=f"msg_{uuid.uuid4().hex[:8]}",
                type="message",
                role="assistant",
                status="completed",
                content=[text],
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    returns = Agent(name="Returns", instructions="Handle returns.", model=Scripted("Returns"))
    triage = Agent(
        name="Triage", instructions="Route.", model=Scripted("Triage"), handoffs=[returns]
    )
    path = folder / "agents_sdk.db"

    async def run(thread: str) -> None:
        session = SQLiteSession(thread, path)
        agent: Any = triage
        for text in TURNS:
            result = await Runner.run(agent, text, session=session)
            agent = result.last_agent
            assert result.final_output == reply_to(text), result.final_output
        session.close()

    return run


async def agent_framework(
    folder: Path, latency: float, _: contextlib.AsyncExitStack
) -> Conversation:
    """Microsoft Agent Framework: `HandoffBuilder` over scripted chat clients, checkpointed
    to files."""
    from agent_framework import (
        BaseChatClient,
        ChatResponse,
        ChatResponseUpdate,
        Content,
        FileCheckpointStorage,
        FunctionInvocationLayer,
        Message,
        ResponseStream,
    )
    from agent_framework.orchestrations import HandoffAgentUserRequest, HandoffBuilder

    class Scripted(FunctionInvocationLayer, BaseChatClient):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def _inner_get_response(self, *, messages: Any, stream: bool = False, **_: Any) -> Any:
            if self.name == "Triage":
                content = Content.from_function_call(
                    call_id=f"call_{uuid.uuid4().hex[:8]}",
                    name="handoff_to_Returns",
                    arguments="{}",
                )
            else:
                last = next((m.text for m in reversed(messages) if m.role == "user"), "")
                content = Content.from_text(reply_to(last or ""))
            response = ChatResponse(messages=[Message(role="assistant", contents=[content])])

            async def respond() -> ChatResponse:
                if latency:
                    await asyncio.sleep(latency)
                return response

            async def updates() -> Any:
                if latency:
                    await asyncio.sleep(latency)
                yield ChatResponseUpdate(contents=[content], role="assistant")

            if not stream:
                return respond()
            return ResponseStream(updates(), finalizer=lambda _: response)

    # Its own checkpoints hold a `list[...]` type object, which its loader refuses by default.
    storage = FileCheckpointStorage(
        str(folder / "maf"), allowed_checkpoint_types=["types:GenericAlias"]
    )
    logging.getLogger("agent_framework").setLevel(logging.ERROR)

    def build() -> Any:
        kept = {"require_per_service_call_history_persistence": True}  # handoffs require it
        triage = Scripted("Triage").as_agent(name="Triage", instructions="Route.", **kept)
        returns = Scripted("Returns").as_agent(
            name="Returns", instructions="Handle returns.", **kept
        )
        return (
            HandoffBuilder(participants=[triage, returns], checkpoint_storage=storage)
            .with_start_agent(triage)
            .add_handoff(triage, [returns])
            .add_handoff(returns, [triage])
            .build()
        )

    async def run(thread: str) -> None:
        workflow = build()
        events = [event async for event in workflow.run(TURNS[0], stream=True)]
        for text in (*TURNS[1:], None):
            asked = [e for e in events if e.type == "request_info"]
            assert asked, "the workflow did not wait for the customer"
            if text is None:
                answer = HandoffAgentUserRequest.terminate()
            else:
                answer = HandoffAgentUserRequest.create_response(text)
            events = await workflow.run(responses={e.request_id: answer for e in asked})

    return run


PEERS: dict[str, tuple[str, Setup]] = {
    "switchboard": ("bot", switchboard),
    "openai_agents_sdk": ("agents", agents_sdk),
    "microsoft_agent_framework": ("agent_framework_orchestrations", agent_framework),
}


async def sequential(setup: Setup, conversations: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        async with contextlib.AsyncExitStack() as stack:
            return await _sequential(await setup(Path(folder), 0.0, stack), conversations)


async def _sequential(run: Conversation, conversations: int) -> float:
    for warm in range(10):
        await run(f"warm-{warm}")
    started = time.perf_counter()
    for number in range(conversations):
        await run(f"c{number}")
    return (time.perf_counter() - started) / conversations * 1000


async def concurrent(setup: Setup, threads: int, latency: float) -> float:
    with tempfile.TemporaryDirectory() as folder:
        async with contextlib.AsyncExitStack() as stack:
            return await _concurrent(await setup(Path(folder), latency, stack), threads)


async def _concurrent(run: Conversation, threads: int) -> float:
    await run("warm")
    started = time.perf_counter()
    await asyncio.gather(*(run(f"t{n}") for n in range(threads)))
    return threads * len(TURNS) / (time.perf_counter() - started)


async def main() -> None:
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # no trace export attempts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    ours: dict[str, float] = {}
    for name, (module, setup) in PEERS.items():
        if importlib.util.find_spec(module) is None:
            line = {"mode": "peers", "framework": name, "skipped": f"{module} not installed"}
            print(json.dumps(line), flush=True)
            continue
        ms = await sequential(setup, args.conversations)
        ours.setdefault("ms", ms)
        line = {
            "mode": "peers",
            "framework": name,
            "per_conversation_ms": round(ms, 3),
            "ratio_to_switchboard": round(ms / ours["ms"], 2),
        }
        if args.concurrent:
            per_s = await concurrent(setup, args.threads, args.latency)
            ours.setdefault("per_s", per_s)
            ideal = len(TURNS) * args.threads / (3 * args.latency)
            line |= {
                "user_turns_per_s": round(per_s, 1),
                "share_of_ideal": round(per_s / ideal, 3),
                "throughput_ratio_to_switchboard": round(per_s / ours["per_s"], 3),
            }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
