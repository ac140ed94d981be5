"""The seam between the engine and any language model: plain values and one Protocol.

Nothing here talks to a network; `OpenAIChatModel`, `OfflineModel` and `ScriptedModel` all speak
these types, so the engine runs unchanged on any of them.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as the model wrote it; `arguments` is raw JSON text and may be malformed."""

    id: str
    name: str
    arguments: str = "{}"


# How an agent's instructions say that the conversation was just handed to it (the engine writes
# it; the offline demo model reads it, as a real model would, and answers instead of routing).
JUST_HANDED = "has just handed this conversation to you"


@functools.lru_cache(maxsize=1024)
def message_name(agent: str) -> str:
    """An agent's name as the `name` field of a message allows it ([A-Za-z0-9_-], 64 chars)."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in agent)[:64]


class ChatMessage(NamedTuple):
    """One message of a chat request, in the shape shared by every Chat Completions server.

    A NamedTuple rather than a dataclass: immutable all the same, and built 2.5x faster, which
    matters because a prompt is rebuilt from the whole window on every model call.
    """

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function tool offered to the model: name, description and JSON Schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call consumed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything a model needs for one call on behalf of one agent."""

    agent: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    model: str | None = None
    description: str = ""  # what the agent is for, in a line (the offline demo routes by it)


@dataclass(frozen=True, slots=True)
class ModelReply:
    """What a model answered: text, tool calls, or both."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage | None = None
    model: str | None = None


class ModelError(Exception):
    """A model call failed after the client's own retries; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of a reply's text, as the model writes it."""

    text: str


Chunk = TextDelta | ModelReply  # a stream's items: text as it comes, then the whole reply


class ChatModel(Protocol):
    """Anything that turns a `ModelRequest` into a `ModelReply`."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one model call; raise `ModelError` when it cannot be answered."""
        ...


class StreamingModel(ChatModel, Protocol):
    """A model that can also hand over its reply as it writes it."""

    def stream(self, request: ModelRequest) -> AsyncIterator[Chunk]:
        """The reply as it is written: `TextDelta`s of its text, then the whole `ModelReply`
        (always last, with the full text, every tool call and the usage). Raise `ModelError`
        when it cannot be answered, also midway."""
        ...


async def streamed(model: ChatModel, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
    """The model's reply as a stream: its own, or the whole reply at once."""
    stream = getattr(model, "stream", None)
    if stream is None:
        yield await model.complete(request)
        return
    async for chunk in stream(request):
        yield chunk


async def written(reply: ModelReply, pause: float = 0.0) -> AsyncIterator[Chunk]:
    """A whole reply as a stream: its text word by word (`pause` seconds before each), then the
    reply itself; for models that have the reply at once (the offline demo, tests)."""
    for word in re.findall(r"\s*\S+|\s+$", reply.text or ""):
        if pause:
            await asyncio.sleep(pause)
        yield TextDelta(word)
    yield reply


async def final(chunks: AsyncIterator[Chunk]) -> ModelReply:
    """The whole reply at the end of a stream."""
    last: Chunk | None = None
    async for last in chunks:  # noqa: B007 -- only the last item is the reply
        pass
    if not isinstance(last, ModelReply):
        raise ModelError("the model's stream ended without a reply")
    return last
