"""The seam between the engine and any language model: plain values and one Protocol.

Nothing here talks to a network; `OpenAIChatModel`, `OfflineModel` and `ScriptedModel` all speak
these types, so the engine runs unchanged on any of them.
"""

from __future__ import annotations

import functools
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


class ChatModel(Protocol):
    """Anything that turns a `ModelRequest` into a `ModelReply`."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Run one model call; raise `ModelError` when it cannot be answered."""
        ...
