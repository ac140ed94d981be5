"""A local HTTP server that speaks the Chat Completions API to the real `openai` client.

Replies come from a script (or a function of the request); every request body is recorded, so
tests assert exactly what the client sent. Failures carry `retry-after-ms`, which the client
honours, so retry tests take milliseconds. Run as a script, it serves the canonical e-commerce
conversation on a port of its own (for the console subprocess test and the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Body = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A completion: text and/or tool calls `(name, arguments)`; arguments may be raw text."""

    text: str | None = None
    tool_calls: tuple[tuple[str, Any], ...] = ()
    finish_reason: str | None = None
    refusal: str | None = None
    usage: tuple[int, int] = (100, 10)
    model: str | None = None


@dataclass(frozen=True)
class Fail:
    """An HTTP error answer (429, 500, ...)."""

    status: int
    retry_after_ms: int = 5


@dataclass(frozen=True)
class Delay:
    """Answer `then` after `seconds` (to exceed the client's timeout)."""

    seconds: float
    then: Reply = field(default_factory=lambda: Reply("late"))


Step = Reply | Fail | Delay
Responder = Callable[[Body], Step]
_ids = itertools.count(1)


def completion(body: Body, reply: Reply) -> Body:
    """The JSON a Chat Completions server returns for `reply`."""
    calls = [
        {
            "id": f"call_{next(_ids)}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for name, arguments in reply.tool_calls
    ]
    finish = reply.finish_reason or ("tool_calls" if calls else "stop")
    message: Body = {"role": "assistant", "content": reply.text, "refusal": reply.refusal}
    if calls:
        message["tool_calls"] = calls
    prompt, completion_tokens = reply.usage
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or body.get("model", "test-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


class ChatCompletionsServer:
    """`POST /v1/chat/completions` on 127.0.0.1, answering from `script` then `respond`."""

    def __init__(self, script: list[Step] | None = None, respond: Responder | None = None):
        self.script = list(script or [])
        self.respond = respond
        self.requests: list[Body] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> ChatCompletionsServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ChatCompletionsServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}
        return web.json_response({"object": "list", "data": [model]})

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.script:
            step = self.script.pop(0)
        elif self.respond is not None:
            step = self.respond(body)
        else:
            return web.json_response({"error": {"message": "script exhausted"}}, status=599)
        if isinstance(step, Delay):
            await asyncio.sleep(step.seconds)
            step = step.then
        if isinstance(step, Fail):
            return web.json_response(
                {"error": {"message": f"scripted {step.status}", "type": "server_error"}},
                status=step.status,
                headers={"retry-after-ms": str(step.retry_after_ms)},
            )
        return web.json_response(completion(body, step))


def canonical(body: Body) -> Step:
    """The canonical e-commerce conversation: Triage hands off, Returns asks, then answers,
    and a later suspicious message makes Returns escalate to Fraud."""
    system = body["messages"][0]["content"]
    last = body["messages"][-1]
    said = (last.get("content") or "").lower() if last["role"] == "user" else ""
    if system.startswith("You are Triage"):
        return Reply(tool_calls=(("handoff_to_Returns", {"reason": "Return request."}),))
    if system.startswith("You are Returns"):
        if "never arrived" in said:
            return Reply(tool_calls=(("handoff_to_Fraud", {"reason": "Refund without return."}),))
        if "order 42" in said:
            return Reply("Thanks! Order 42 is eligible; a return label is on its way.")
        return Reply("I can help with that. What is your order number?")
    if system.startswith("You are Fraud"):
        return Reply("A colleague will review this; please send photos of the parcel.")
    return Reply("Hello.")


async def _serve(port: int) -> None:
    server = await ChatCompletionsServer(respond=canonical).start(port)
    print(server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the canonical conversation.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_serve(parser.parse_args().port))
