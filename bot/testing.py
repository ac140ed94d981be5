"""Testing helpers, never used by the bot itself: a scripted model and a recording platform.

`ScriptedModel` is the honest fake behind the `ChatModel` seam (replies come from a script or a
function); `RecordingPlatform` is a chat platform that only remembers what it was asked to post.
Tests and benchmarks use both; the real models and platforms are tested against local servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from bot.engine.agents import Persona
from bot.models.base import Chunk, ModelError, ModelReply, ModelRequest, ToolCall, written
from bot.service.messages import Post
from bot.service.moderation import CaseCard
from bot.service.platform import Click
from bot.store.values import SessionKey

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
    `latency` (seconds) is awaited before each answer, to model a slow provider; streamed,
    each word comes `word_delay` seconds after the one before. Only the last `keep` requests are
    kept (`calls` counts them all), so long runs do not grow in memory.
    """

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        respond: Responder | None = None,
        latency: float = 0.0,
        keep: int = 100,
        word_delay: float = 0.0,
    ) -> None:
        self._script = list(script)
        self._respond = respond
        self.latency = latency
        self.word_delay = word_delay
        self.requests: deque[ModelRequest] = deque(maxlen=keep)
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Record the request and answer with the next scripted step."""
        self.requests.append(request)
        self.calls += 1
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
            f"model call #{self.calls} for {request.agent!r} has no scripted reply"
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[Chunk]:
        """The next scripted answer, word by word."""
        async for chunk in written(await self.complete(request), self.word_delay):
            yield chunk

    @property
    def remaining(self) -> int:
        """Scripted steps not yet used."""
        return len(self._script)

    def agents_called(self) -> list[str]:
        """The agent of every recorded request, in order."""
        return [request.agent for request in self.requests]


class RecordingPlatform:
    """A `Platform` that remembers posts, cards and private answers; `refuse` posts fail first.

    `moderators` are the actors whose clicks are allowed (None: everyone).
    """

    name = "test"
    placeholders = False
    cards_setting: str | None = None
    stream_rate: float | None = None
    stream_interval: float | None = None
    redelivers = False

    def __init__(self, *, moderators: Iterable[str] | None = None, refuse: int = 0) -> None:
        self.posts: list[tuple[SessionKey, Post]] = []
        self.tags: dict[str, str] = {}  # the tag of each post accepted -> its reference
        self.removed: list[str] = []
        self.cards: list[tuple[CaseCard, str | None]] = []
        self.told: list[tuple[str, str]] = []
        self.moderators = None if moderators is None else frozenset(moderators)
        self.refuse = refuse
        self.shown: list[tuple[str | None, str, str]] = []  # replies being written: ref, text, who
        self._refs = itertools.count(1)

    def texts(self, kind: str | None = None) -> list[str]:
        """The text of every post, in order (of one kind, if given)."""
        return [post.text for _, post in self.posts if kind is None or post.kind == kind]

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        if post.kind == "working":
            return None  # no placeholders here (the Slack tests cover them)
        if start:
            return self.tags.get(tag)  # a post of one part, already here
        if self.refuse > 0:
            self.refuse -= 1
            raise ConnectionError("platform unavailable")
        self.posts.append((key, post))
        self.tags[tag] = f"ref-{next(self._refs)}"
        return self.tags[tag]

    async def show(self, key: SessionKey, ref: str | None, text: str, persona: Persona) -> None:
        self.shown.append((ref, text, persona.name))

    async def find(
        self, key: SessionKey, post: Post, *, tag: str, after: str | None
    ) -> tuple[str | None, int]:
        ref = self.tags.get(tag)
        return ref, int(ref is not None)

    async def remove(self, key: SessionKey, ref: str) -> None:
        self.removed.append(ref)

    @contextlib.asynccontextmanager
    async def working(self, key: SessionKey) -> AsyncIterator[None]:
        yield

    async def send_card(self, card: CaseCard, ref: str | None, *, tag: str) -> str | None:
        self.cards.append((card, ref))
        return ref or f"card-{next(self._refs)}"

    async def find_card(self, card: CaseCard, *, tag: str) -> str | None:
        return None

    async def is_moderator(self, click: Click) -> bool:
        return self.moderators is None or click.actor in self.moderators

    async def tell(self, click: Click, text: str) -> None:
        self.told.append((click.actor, text))
