"""`OpenAIChatModel`: Chat Completions with function tools, on OpenAI or any compatible server.

The only module that imports `openai`. The client's own retries handle 408/409/429/5xx with
backoff; what still fails becomes a `ModelError` whose message holds no secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from bot.models.base import (
    ChatMessage,
    Chunk,
    ModelError,
    ModelReply,
    ModelRequest,
    TextDelta,
    ToolCall,
    Usage,
)
from bot.settings import Settings

if TYPE_CHECKING:
    import httpx2  # the openai client's HTTP library

log = logging.getLogger(__name__)

# Servers like Ollama need no key, but the client insists on one.
_PLACEHOLDER_KEY = "not-needed"


@dataclass(slots=True)
class _ServerTraits:
    """What this model learnt about its server (mutable: one field, set once, never reset)."""

    takes_stream_options: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAIChatModel:
    """A `StreamingModel` on `openai.AsyncOpenAI` (Chat Completions API)."""

    client: openai.AsyncOpenAI
    model: str
    temperature: float | None = None
    parallel_tool_calls: bool | None = False
    tool_choice: str | None = None
    _server: _ServerTraits = field(
        default_factory=_ServerTraits, init=False, repr=False, compare=False
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChatModel:
        """Build the client from `OPENAI_*` settings."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        client = openai.AsyncOpenAI(
            api_key=key or _PLACEHOLDER_KEY,
            base_url=settings.openai_base_url or None,
            timeout=settings.openai_timeout,
            max_retries=settings.openai_max_retries,
        )
        return cls(
            client=client,
            model=settings.openai_model,
            temperature=settings.openai_temperature,
            parallel_tool_calls=settings.openai_parallel_tool_calls,
            tool_choice=settings.openai_tool_choice,
        )

    async def aclose(self) -> None:
        """Close the HTTP client's connections."""
        await self.client.close()

    async def complete(self, request: ModelRequest) -> ModelReply:
        """One Chat Completions call; errors become `ModelError`."""
        with _translated_errors():
            completion = await self.client.chat.completions.create(**self._body(request))
        return _reply(completion)

    async def stream(self, request: ModelRequest) -> AsyncIterator[Chunk]:
        """The same call, streamed: `TextDelta`s as the text arrives, then the whole reply.

        Asks for usage with `stream_options`; a server that refuses the field (HTTP 400/422) is
        asked once more without it, and never again by this model. A server that ignores
        `stream` and answers with the whole completion gets the whole reply, with no delta."""
        assembly = _Assembly()
        with _translated_errors():
            chunks = await self._open_stream(self._body(request))
            async with chunks:
                if _answered_at_once(chunks.response):
                    yield _reply(await _whole_completion(chunks.response))
                    return
                async for chunk in chunks:
                    text = assembly.add(chunk)
                    if text:
                        yield TextDelta(text)
        yield assembly.reply()

    async def _open_stream(self, body: dict[str, Any]) -> openai.AsyncStream[ChatCompletionChunk]:
        if self._server.takes_stream_options:
            try:
                return await self._create_stream(body, with_usage=True)
            except openai.APIStatusError as exc:
                if exc.status_code not in (400, 422):
                    raise
                log.warning(
                    "the model server refused stream_options (HTTP %s); streaming without usage",
                    exc.status_code,
                )
            chunks = await self._create_stream(body, with_usage=False)
            self._server.takes_stream_options = False  # it worked without: never send it again
            return chunks
        return await self._create_stream(body, with_usage=False)

    async def _create_stream(
        self, body: dict[str, Any], with_usage: bool
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        streamed: dict[str, Any] = {**body, "stream": True}
        if with_usage:
            streamed["stream_options"] = {"include_usage": True}
        chunks: openai.AsyncStream[ChatCompletionChunk]
        chunks = await self.client.chat.completions.create(**streamed)
        return chunks

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        """The request body, the same whether the reply is streamed or not."""
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [_message(message) for message in request.messages],
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
            if self.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = self.parallel_tool_calls
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        return body


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """The `openai` client's errors, as `ModelError`s whose message holds no secret."""
    try:
        yield
    except openai.APIStatusError as exc:
        raise ModelError(f"the model server answered HTTP {exc.status_code}") from exc
    except openai.APITimeoutError as exc:
        raise ModelError("the model server did not answer in time") from exc
    except openai.APIConnectionError as exc:
        raise ModelError("cannot connect to the model server, or it broke off") from exc
    except openai.APIError as exc:  # an error event in the middle of a stream
        raise ModelError("the model server reported an error while answering") from exc
    except openai.OpenAIError as exc:
        raise ModelError(f"the model call failed ({type(exc).__name__})") from exc
    except json.JSONDecodeError as exc:
        raise ModelError("the model server sent a stream that is not valid JSON") from exc


def _answered_at_once(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")


async def _whole_completion(response: httpx2.Response) -> ChatCompletion:
    data = json.loads(await response.aread())
    if not isinstance(data, dict):
        raise ModelError(f"the model server answered a JSON {type(data).__name__}, not an object")
    return ChatCompletion.model_construct(**data)


def _message(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.name:
        data["name"] = message.name
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    return data


def _reply(completion: Any) -> ModelReply:
    if not completion.choices:
        raise ModelError("the model server returned no choices")
    choice = completion.choices[0]
    message = choice.message
    calls = tuple(
        _call(call.id, index, call.function.name, call.function.arguments)
        for index, call in enumerate(message.tool_calls or ())
        if getattr(call, "function", None) is not None
    )
    return _finished(
        message.content or getattr(message, "refusal", None) or None,
        calls,
        choice.finish_reason,
        _usage(completion.usage),
        completion.model,
    )


def _call(ident: str | None, index: int, name: str, arguments: str | None) -> ToolCall:
    return ToolCall(ident or f"call_{index}", name, arguments or "{}")


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)


def _finished(
    text: str | None,
    calls: tuple[ToolCall, ...],
    finish_reason: str | None,
    usage: Usage | None,
    model: str | None,
) -> ModelReply:
    """The reply, streamed or not; a reply cut at the token limit says so at its end."""
    if finish_reason == "length" and not calls:
        log.warning("model reply cut at the token limit")
        text = (text or "").rstrip() + " …(reply cut short at the model's length limit)"
    return ModelReply(
        text=text,
        tool_calls=calls,
        finish_reason=finish_reason or "stop",
        usage=usage,
        model=model or None,
    )


@dataclass(slots=True)
class _CallParts:
    ident: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Assembly:
    """A streamed reply put together chunk by chunk (no I/O: `stream` feeds it).

    Tool-call pieces are keyed by `index`; id and name may come only in a call's first piece,
    its arguments in many. A new id at a known index starts a new call (some servers number
    every call 0). A refusal streams as text when the reply has no other text.
    """

    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: list[_CallParts] = field(default_factory=list)
    by_index: dict[int, _CallParts] = field(default_factory=dict)
    choices: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Take one chunk in; return the text it adds, to show now."""
        self.model = self.model or chunk.model or None
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        if not chunk.choices:
            return ""
        self.choices += 1
        choice = chunk.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        delta = choice.delta
        for piece in delta.tool_calls or ():
            parts = self.by_index.get(piece.index)
            if parts is None or (piece.id and parts.ident and piece.id != parts.ident):
                parts = self.by_index[piece.index] = _CallParts()
                self.calls.append(parts)
            parts.ident = parts.ident or piece.id
            if piece.function is not None:
                parts.name = parts.name or piece.function.name
                parts.arguments.append(piece.function.arguments or "")
        if delta.content:
            self.content.append(delta.content)
            return delta.content
        if delta.refusal:
            self.refusal.append(delta.refusal)
            return "" if self.content else delta.refusal
        return ""

    def reply(self) -> ModelReply:
        """The whole reply, once the stream has ended."""
        if not self.choices:
            raise ModelError("the model server's stream held no choices")
        if self.finish_reason is None:
            raise ModelError("the model server's stream ended before its reply did")
        calls = tuple(
            _call(parts.ident, number, parts.name, "".join(parts.arguments))
            for number, parts in enumerate(self.calls)
            if parts.name
        )
        text = "".join(self.content) or "".join(self.refusal) or None
        return _finished(text, calls, self.finish_reason, self.usage, self.model)
