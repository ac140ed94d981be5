"""`ScriptedModel`: the honest fake for tests. Replies come from a script; requests are recorded."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bot.models.base import ModelError, ModelReply, ModelRequest, ToolCall

Responder = Callable[[ModelRequest], ModelReply | Awaitable[ModelReply]]
Step = ModelReply | ModelError

_ids = itertools.count(1)


def say(text: str) -> ModelReply:
    """A scripted reply with text only."""
    return ModelReply(text=text)


def call(
    name: str, arguments: dict[str, Any] | str | None = None, *, text: str | None = None
) -> ModelReply:
    """A scripted reply with one tool call (`arguments` as a dict, or raw text to test bad JSON)."""
    return calls((name, arguments), text=text)


def calls(*pairs: tuple[str, dict[str, Any] | str | None], text: str | None = None) -> ModelReply:
    """A scripted reply with several tool calls, in order."""
    tool_calls = tuple(
        ToolCall(
            f"call_{next(_ids)}",
            name,
            arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
        )
        for name, arguments in pairs
    )
    return ModelReply(text=text, tool_calls=tool_calls, finish_reason="tool_calls")


class ScriptExhausted(AssertionError):
    """The code under test made more model calls than the script holds."""


class ScriptedModel:
    """A `ChatModel` that answers from a list of replies (or a function) and records requests.

    A `ModelError` in the script is raised instead of answered, to test failures.
    `latency` (seconds) is awaited before each answer, to model a slow provider.
    """

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        respond: Responder | None = None,
        latency: float = 0.0,
    ) -> None:
        self._script = list(script)
        self._respond = respond
        self.latency = latency
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Record the request and answer with the next scripted step."""
        self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._script:
            step = self._script.pop(0)
            if isinstance(step, ModelError):
                raise step
            return step
        if self._respond is not None:
            reply = self._respond(request)
            return await reply if isinstance(reply, Awaitable) else reply
        raise ScriptExhausted(
            f"model call #{len(self.requests)} for {request.agent!r} has no scripted reply"
        )

    @property
    def remaining(self) -> int:
        """Scripted steps not yet used."""
        return len(self._script)

    def agents_called(self) -> list[str]:
        """The agent of every recorded request, in order."""
        return [request.agent for request in self.requests]
