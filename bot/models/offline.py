"""`OfflineModel`: a deterministic stand-in for a language model, for the credential-free demo.

It routes the user's message by word overlap with the handoff tools' descriptions (words shared
by every description count for nothing), and otherwise answers with a plain statement of what it
is and how to use a real model. No network, no randomness.
"""

from __future__ import annotations

import math
import re

from bot.models.base import (
    JUST_HANDED,
    ChatMessage,
    ModelReply,
    ModelRequest,
    ToolCall,
    ToolSpec,
    message_name,
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
        "do",
        "for",
        "from",
        "get",
        "got",
        "has",
        "have",
        "hello",
        "hi",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
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
        "when",
        "where",
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
        """Hand off when the user's words point at another agent; otherwise explain itself."""
        last_user = _last_user_message(request.messages)
        handoffs = [tool for tool in request.tools if tool.name.startswith("handoff_to_")]
        handed = JUST_HANDED in (request.messages[0].content or "")
        if last_user is not None and request.messages[-1] is last_user and handoffs and not handed:
            spoken = _has_spoken(request.messages, message_name(request.agent))
            own = request.messages[0].content or "" if spoken else None
            choice = _route(last_user.content or "", handoffs, own)
            if choice is not None:
                tool, matched = choice
                reason = "The user mentioned " + ", ".join(sorted(matched)) + "."
                arguments = '{"reason": "' + reason + '"}'
                call = ToolCall(f"offline_{len(request.messages)}", tool.name, arguments)
                return ModelReply(tool_calls=(call,), finish_reason="tool_calls")
        said = (last_user.content or "").strip() if last_user else ""
        echo = f'You said: "{_shorten(said)}". ' if said else ""
        return ModelReply(text=f"{request.agent} here. {echo}{HINT}")


def _last_user_message(messages: tuple[ChatMessage, ...]) -> ChatMessage | None:
    for message in reversed(messages):
        if message.role == "user":
            return message
    return None


def _has_spoken(messages: tuple[ChatMessage, ...], name: str) -> bool:
    """Whether the agent has answered before (its replies carry its name)."""
    return any(m.role == "assistant" and m.content and m.name == name for m in messages)


def _route(text: str, tools: list[ToolSpec], own: str | None) -> tuple[ToolSpec, set[str]] | None:
    """The handoff whose description shares the rarest words with `text`, if any.

    An agent that has already spoken (`own` is its instructions) stays unless another agent's
    description fits the message better than its own instructions do.
    """
    said = _words(text)
    if not said:
        return None
    vocab = {
        tool.name: _words(tool.description + " " + tool.name[len("handoff_to_") :])
        for tool in tools
    }
    if own is not None:
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
    if best is None or (own is not None and score(vocab[""]) >= best[0]):
        return None
    return best[1], best[2]


def _words(text: str) -> set[str]:
    return {
        _stem(word) for word in _WORD.findall(text.lower().replace("_", " ")) if word not in _STOP
    }


def _stem(word: str) -> str:
    """A crude English stemmer: enough that "returns", "returned" and "return" meet."""
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            if suffix != "s" and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
                word = word[:-1]  # shipping -> ship, cancelled -> cancel
            break
    return word


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
