"""`OfflineModel`: a deterministic stand-in for a language model, for the credential-free demo.

It routes the user's latest message by word overlap with the handoff tools' descriptions and the
targets' names, against the agent's own description (rarer shared words count more; a tie keeps
the agent), and otherwise answers, saying once per conversation what it is and how to use a real
model. No network, no randomness.

Offered the demo shop's tools (`bot.shop`: `lookup_order`, `start_return`, `issue_refund`,
`change_address`, `cancel_order`), an agent that keeps a message naming an order (4 digits) calls
one: the action the words ask for (a refund with its amount, a return with its reason, a
cancellation, an address change "to ..."), or, for a question or anything else, a lookup. The tool's
result, or a moderator's decision on a call that waited for approval, is then answered in a few
plain lines, and nothing is called again for that message.
"""

from __future__ import annotations

import json
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
_ORDER_ID = r"(?<![\w.,])(\d{4})(?!\w|[.,]\d)"
_NAMED_ORDER = re.compile(r"\border\b\D{0,20}?" + _ORDER_ID, re.IGNORECASE)
_ANY_ORDER = re.compile(r"#?" + _ORDER_ID)
_AMOUNT = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d{1,2})?)(?![\w]|[.,]\d)")
_NEW_ADDRESS = re.compile(r"\baddress\b.*?\bto\s+(.{6,})$", re.IGNORECASE | re.DOTALL)
_RETURN = re.compile(r"\breturn (?:it|them|this|these|those|the|my|an?|order)\b|\bsend \w* ?back\b")
_BECAUSE = re.compile(r"\b(?:because|since)\b\s+(.+)$", re.IGNORECASE | re.DOTALL)
# What a moderator's decision on a call that waited for approval reads like, to the agent that
# made it (bot.engine.approvals writes it; it reaches the agent as a message of its own).
_DECIDED = re.compile(
    r"^A moderator (approved|rejected) your call to [\w.-]+(?:, and it (ran|failed)\. "
    r"Its result: (.*?)\n)?",
    re.DOTALL,
)
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
        """Hand off when the user's latest words fit another agent better than this one; else
        call the shop's tool those words ask for; else answer (a tool's result, if one just
        came back), saying once per conversation what this model is."""
        messages = request.messages
        last_user = _last_user_message(messages)
        said = (last_user.content or "").strip() if last_user else ""
        decided = _DECIDED.match(said)
        first = not any(m.role == "assistant" and m.content for m in messages)
        hint = f" {HINT}" if first else ""
        if decided is not None and messages[-1] is last_user:
            return ModelReply(text=f"{request.agent} here. {_decision(decided)}{hint}")
        handoffs = [tool for tool in request.tools if tool.name.startswith("handoff_to_")]
        if last_user is not None and messages[-1] is last_user:
            choice = _route(said, handoffs, f"{request.agent} {request.description}")
            if choice is not None:
                tool, matched = choice
                reason = "The user mentioned " + ", ".join(matched) + "."
                arguments = '{"reason": "' + reason + '"}'
                call = ToolCall(f"offline_{len(messages)}", tool.name, arguments)
                return ModelReply(tool_calls=(call,), finish_reason="tool_calls")
            wanted = _shop_call(said, {tool.name for tool in request.tools})
            if wanted is not None:
                name, given = wanted
                shop = ToolCall(f"offline_{len(messages)}", name, json.dumps(given))
                return ModelReply(tool_calls=(shop,), finish_reason="tool_calls")
        answer = _tool_answer(messages)
        if answer is not None:
            return ModelReply(text=f"{request.agent} here. {answer}{hint}")
        echo = f'You said: "{_shorten(said)}".' if said else "I'm listening."
        return ModelReply(text=f"{request.agent} here. {echo}{hint}")

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


def _shop_call(text: str, offered: set[str]) -> tuple[str, dict[str, object]] | None:
    """The shop tool (of those `offered`) and arguments that `text` asks for, if it names an
    order: a refund (with an amount), a new address ("... address ... to ..."), a cancellation
    or a return; a question, or anything else, looks the order up."""
    named = _NAMED_ORDER.search(text) or _ANY_ORDER.search(text)
    if named is None:
        return None
    order = named.group(1)
    lowered = text.lower()
    if not text.rstrip().endswith("?"):
        others = [m for m in _AMOUNT.finditer(text) if not m.start() <= named.start(1) < m.end()]
        amount = float(others[0].group(1).replace(",", ".")) if others else None
        address = _NEW_ADDRESS.search(text)
        wanted: list[tuple[str, bool, dict[str, object]]] = [
            ("issue_refund", "refund" in lowered and amount is not None, {"amount": amount}),
            (
                "change_address",
                address is not None,
                {"address": address.group(1).strip(" .!\"'") if address else ""},
            ),
            ("cancel_order", "cancel" in lowered, {}),
            ("start_return", _RETURN.search(lowered) is not None, {"reason": _reason(text)}),
        ]
        for name, asked, given in wanted:
            if asked and name in offered:
                return name, {"order_id": order, **given}
    return ("lookup_order", {"order_id": order}) if "lookup_order" in offered else None


def _reason(text: str) -> str:
    """Why the customer returns an item: what follows "because", or all they said."""
    because = _BECAUSE.search(text)
    return _shorten((because.group(1) if because else text).strip().rstrip("."), 200)


def _tool_answer(messages: tuple[ChatMessage, ...]) -> str | None:
    """A few lines on the result that just came back, when the last message is a result of
    one of this agent's own (non-handoff) tool calls."""
    last = messages[-1] if messages else None
    if last is None or last.role != "tool":
        return None
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    name = names.get(last.tool_call_id or "", "")
    if not name or name.startswith("handoff_to_"):
        return None
    return _result(last.content or "", done=name != "lookup_order")


def _result(content: str, *, done: bool = True) -> str:
    """A tool's result in plain lines, never its text as it came (that would read as an echo
    of the bot's own workings)."""
    if content.startswith("Error:"):
        cause = re.sub(r"^Error: (?:[\w.]+ failed: )?(?:\w+: )?", "", content).strip()
        return f"That did not work: {cause.rstrip('.')}."
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        lines = [f"- {key.replace('_', ' ')}: {_plain(value)}" for key, value in data.items()]
        return ("Done. " if done else "") + "The order system says:\n" + "\n".join(lines)
    if "approv" in content.lower():
        return (
            "That needs a moderator's approval first: a person on the team will look at it, "
            "and I will come back to you in this conversation."
        )
    return "Done."


def _decision(decided: re.Match[str]) -> str:
    """What to tell the customer of a moderator's decision on a call that waited."""
    if decided.group(1) == "rejected":
        return "A person on the team did not approve that request, so it was not done."
    return "A person on the team approved it. " + _result(decided.group(3) or "")


def _plain(value: object) -> str:
    """A JSON value as words: lists joined by "; ", objects as "name (key value, ...)"."""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "; ".join(_plain(item) for item in value) or "none"
    if isinstance(value, dict):
        head = str(value.get("name") or value.get("rma") or "")
        rest = ", ".join(
            f"{key} {_plain(item)}" for key, item in value.items() if key not in ("name", "rma")
        )
        return f"{head} ({rest})" if head and rest else head or rest
    return str(value)


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
