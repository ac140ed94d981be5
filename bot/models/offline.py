"""`OfflineModel`: a deterministic stand-in for a language model, for the credential-free demo.

It routes the user's latest message by word overlap with the handoff tools' descriptions and the
targets' names, against the agent's own description (rarer shared words count more; a tie keeps
the agent), and otherwise answers, saying once per conversation what it is and how to use a real
model. No network, no randomness.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator

from bot.models.base import (
    ChatMessage,
    Chunk,
    ModelReply,
    ModelRequest,
    ToolCall,
    ToolSpec,
    written,
)

HINT = (
    "This is the offline demo model: it routes between agents but cannot really answer. "
    "Set OPENAI_API_KEY (or OPENAI_BASE_URL for a compatible server such as Ollama) "
    "to use a real model."
)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    {
        "a",
        "about",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "get",
        "got",
        "has",
        "have",
        "hello",
        "hi",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "long",
        "me",
        "my",
        "need",
        "no",
        "not",
        "of",
        "off",
        "on",
        "or",
        "our",
        "out",
        "over",
        "per",
        "please",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "those",
        "to",
        "up",
        "want",
        "was",
        "we",
        "what",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    }
)


class OfflineModel:
    """A `ChatModel` that needs no network: keyword routing plus an honest canned answer."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Hand off when the user's latest words fit another agent better than this one;
        otherwise answer, saying once per conversation what this model is."""
        messages = request.messages
        last_user = _last_user_message(messages)
        handoffs = [tool for tool in request.tools if tool.name.startswith("handoff_to_")]
        if last_user is not None and messages[-1] is last_user and handoffs:
            own = f"{request.agent} {request.description}"
            choice = _route(last_user.content or "", handoffs, own)
            if choice is not None:
                tool, matched = choice
                reason = "The user mentioned " + ", ".join(matched) + "."
                arguments = '{"reason": "' + reason + '"}'
                call = ToolCall(f"offline_{len(messages)}", tool.name, arguments)
                return ModelReply(tool_calls=(call,), finish_reason="tool_calls")
        said = (last_user.content or "").strip() if last_user else ""
        echo = f'You said: "{_shorten(said)}".' if said else "I'm listening."
        first = not any(m.role == "assistant" and m.content for m in messages)
        return ModelReply(text=f"{request.agent} here. {echo}" + (f" {HINT}" if first else ""))

    def stream(self, request: ModelRequest) -> AsyncIterator[Chunk]:
        """The same answer, word by word."""
        return _streamed(self, request)


async def _streamed(model: OfflineModel, request: ModelRequest) -> AsyncIterator[Chunk]:
    async for chunk in written(await model.complete(request)):
        yield chunk


def _last_user_message(messages: tuple[ChatMessage, ...]) -> ChatMessage | None:
    for message in reversed(messages):
        if message.role == "user":
            return message
    return None


def _route(text: str, tools: list[ToolSpec], own: str) -> tuple[ToolSpec, list[str]] | None:
    """The handoff whose description (and target's name) shares the rarest words with `text`,
    if it fits better than the agent's own description (`own`) does."""
    said = _words(text)
    if not said:
        return None
    vocab = {
        tool.name: _words(tool.description + " " + tool.name[len("handoff_to_") :])
        for tool in tools
    }
    vocab[""] = _words(own)
    count = len(vocab)

    def score(words: set[str]) -> float:
        return sum(
            math.log((count + 1) / sum(1 for known in vocab.values() if word in known))
            for word in said & words
        )

    best: tuple[float, ToolSpec, set[str]] | None = None
    for tool in tools:
        points = score(vocab[tool.name])
        if points > 0 and (best is None or points > best[0]):
            best = (points, tool, said & vocab[tool.name])
    if best is None or score(vocab[""]) >= best[0]:
        return None
    spelled = {_stem(word): word for word in reversed(_WORD.findall(text.lower()))}
    return best[1], [spelled.get(stem, stem) for stem in sorted(best[2])]


def _words(text: str) -> set[str]:
    return {
        _stem(word)
        for word in _WORD.findall(text.lower().replace("_", " "))
        if len(word) > 1 and word not in _STOP
    }


def _stem(word: str) -> str:
    """A crude English stemmer: enough that "returns", "returned" and "return" meet."""
    for suffix in ("ing", "ed", "s", "y"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            if (
                suffix in ("ing", "ed")
                and len(word) > 3
                and word[-1] == word[-2]
                and word[-1] not in "aeiou"
            ):
                word = word[:-1]  # shipping -> ship, cancelled -> cancel
            break
    return word[:-1] if len(word) > 4 and word.endswith("e") else word  # arrive, arrived


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
