"""A local HTTP server that speaks the Chat Completions API to the real `openai` client.

Replies come from a script (or a function of the request); every request body is recorded, so
tests assert exactly what the client sent. Failures carry `retry-after-ms`, which the client
honours, so retry tests take milliseconds. A request with `"stream": true` is answered as OpenAI
streams: Server-Sent Events of `chat.completion.chunk`s, a token each (a huge text, several),
optionally slowed down, with the time each token was written recorded. Run as a script, it
serves the canonical e-commerce conversation on a port of its own (for the console subprocess
test and the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True)
class Cut:
    """Stream `reply` but break off after `after` tokens: drop the connection, or, with
    `error_status`, send an error event (as OpenAI reports a failure midway) and end the stream.
    A non-streaming request gets no answer (dropped), or an HTTP `error_status`."""

    reply: Reply
    after: int = 2
    error_status: int | None = None


Step = Reply | Fail | Delay | Cut
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


# A huge reply streams several tokens per chunk, so that a test of it stays fast.
MAX_TEXT_CHUNKS = 1000
MAX_ARGUMENT_PIECES = 100


def tokens(text: str) -> list[str]:
    """`text` as a model streams it: words with their leading space (they join back to it),
    grouped into at most `MAX_TEXT_CHUNKS` pieces."""
    words = re.findall(r"\s*\S+|\s+", text)
    if len(words) <= MAX_TEXT_CHUNKS:
        return words
    size = -(-len(words) // MAX_TEXT_CHUNKS)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _pieces(arguments: str) -> list[str]:
    size = max(8, -(-len(arguments) // MAX_ARGUMENT_PIECES))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def chunks(body: Body, reply: Reply, *, tool_call_ids: bool = True) -> Iterator[tuple[bool, Body]]:
    """The `chat.completion.chunk`s OpenAI streams for `reply`, each flagged if it is a token
    (a piece of text, of a refusal or of a call's arguments): a role chunk, the tokens, tool calls
    by index (id and name in the first piece only), `finish_reason` in the last choice chunk, and
    a usage chunk with no choices when `stream_options.include_usage` is set."""
    ident = f"chatcmpl-{next(_ids)}"
    created = int(time.time())
    model = reply.model or body.get("model", "test-model")
    usage_asked = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: Body, finish: str | None = None, choices: bool = True) -> Body:
        data: Body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if choices
            else [],
        }
        if usage_asked:
            data["usage"] = None
        return data

    yield False, chunk({"role": "assistant", "content": "", "refusal": None})
    for token in tokens(reply.text or ""):
        yield True, chunk({"content": token})
    for token in tokens(reply.refusal or ""):
        yield True, chunk({"refusal": token})
    for index, (name, arguments) in enumerate(reply.tool_calls):
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        first: Body = {"index": index, "type": "function", "function": {"name": name}}
        if tool_call_ids:
            first["id"] = f"call_{next(_ids)}"
        for number, piece in enumerate(_pieces(text)):
            call = first if number == 0 else {"index": index, "function": {}}
            call["function"]["arguments"] = piece
            yield True, chunk({"tool_calls": [call]})
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    yield False, chunk({}, finish)
    if usage_asked:
        prompt, completion_tokens = reply.usage
        last = chunk({}, choices=False)
        last["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }
        yield False, last


class ChatCompletionsServer:
    """`POST /v1/chat/completions` on 127.0.0.1, answering from `script` then `respond`.

    Streaming options: `token_delay` seconds before each token; `token_times` gets the monotonic
    time each token was written (every streamed request, in order); `reject_stream_options`
    answers HTTP 400 to a request carrying `stream_options`, as some servers do;
    `tool_call_ids=False` streams tool calls without their `id`; `ignore_stream` answers a
    streaming request with the whole completion, as JSON.
    """

    def __init__(
        self,
        script: list[Step] | None = None,
        respond: Responder | None = None,
        *,
        token_delay: float = 0.0,
        reject_stream_options: bool = False,
        tool_call_ids: bool = True,
        ignore_stream: bool = False,
    ):
        self.script = list(script or [])
        self.respond = respond
        self.requests: list[Body] = []
        self.headers: list[dict[str, str]] = []
        self.token_delay = token_delay
        self.reject_stream_options = reject_stream_options
        self.tool_call_ids = tool_call_ids
        self.ignore_stream = ignore_stream
        self.token_times: list[float] = []
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

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        streaming = body.get("stream") is True and not self.ignore_stream
        if streaming and self.reject_stream_options and "stream_options" in body:
            message = "Unrecognized request argument supplied: stream_options"
            error = {"message": message, "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=400)
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
        if streaming:
            return await self._stream(request, body, step)
        if isinstance(step, Cut):
            if step.error_status is None:
                _drop(request)
                return web.Response()
            error = {"message": f"scripted {step.error_status}", "type": "server_error"}
            return web.json_response({"error": error}, status=step.error_status)
        return web.json_response(completion(body, step))

    async def _stream(
        self, request: web.Request, body: Body, step: Reply | Cut
    ) -> web.StreamResponse:
        reply, cut = (step.reply, step) if isinstance(step, Cut) else (step, None)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client left before the end
            await self._write_chunks(request, response, body, reply, cut)
        return response

    async def _write_chunks(
        self,
        request: web.Request,
        response: web.StreamResponse,
        body: Body,
        reply: Reply,
        cut: Cut | None,
    ) -> None:
        written = 0
        for is_token, data in chunks(body, reply, tool_call_ids=self.tool_call_ids):
            if is_token and cut is not None and written == cut.after:
                if cut.error_status is None:
                    _drop(request)
                    return
                error = {"message": f"scripted {cut.error_status}", "type": "server_error"}
                await response.write(_event({"error": {**error, "code": cut.error_status}}))
                await response.write_eof()
                return
            if is_token and self.token_delay:
                await asyncio.sleep(self.token_delay)
            if is_token:
                self.token_times.append(time.monotonic())  # as it goes out: none is seen before
                written += 1
            await response.write(_event(data))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


def _event(data: Body) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _drop(request: web.Request) -> None:
    """Close the connection under the response, as a crashed server or a lost network does."""
    if request.transport is not None:
        request.transport.close()


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
