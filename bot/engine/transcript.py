"""Transcript items, and the view of them each agent is given.

The transcript is append-only and shared. Each agent sees the users' messages and every agent's
*text* replies, other agents' labelled with their names; it sees its own tool calls with their
results, and never another agent's tool internals. Every tool call in a view has a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.models.base import ChatMessage, ToolCall

Kind = Literal["user", "agent", "tool", "handoff", "prompt", "notice"]


@dataclass(frozen=True, slots=True)
class UserTurn:
    """A message from a person in the thread."""

    text: str
    author: str = "user"
    kind: Literal["user"] = "user"


@dataclass(frozen=True, slots=True)
class AgentReply:
    """One model reply on behalf of `agent`: text shown to the user, and its tool calls."""

    agent: str
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    kind: Literal["agent"] = "agent"


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one of `agent`'s tool calls, as the model will read it."""

    agent: str
    call_id: str
    name: str
    content: str
    is_error: bool = False
    kind: Literal["tool"] = "tool"


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """The conversation passed from `source` to `target`."""

    source: str
    target: str
    reason: str | None = None
    kind: Literal["handoff"] = "handoff"


@dataclass(frozen=True, slots=True)
class ContinuationPrompt:
    """An autonomous-mode nudge to `agent`: seen by that agent only, never shown to the user."""

    agent: str
    text: str
    kind: Literal["prompt"] = "prompt"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the bot itself told the user (a limit, an error); models never see it."""

    text: str
    kind: Literal["notice"] = "notice"


Item = UserTurn | AgentReply | ToolOutcome | HandoffRecord | ContinuationPrompt | Notice

_TYPES: dict[str, type[Any]] = {
    "user": UserTurn,
    "agent": AgentReply,
    "tool": ToolOutcome,
    "handoff": HandoffRecord,
    "prompt": ContinuationPrompt,
    "notice": Notice,
}

INTERRUPTED = "Error: no result was recorded for this call (the turn was interrupted)."


def item_to_dict(item: Item) -> dict[str, Any]:
    """A JSON-ready dict of an item, without its kind (stored beside it)."""
    data: dict[str, Any] = {}
    for name in item.__slots__:
        if name == "kind":
            continue
        value = getattr(item, name)
        if name == "tool_calls":
            value = [[call.id, call.name, call.arguments] for call in value]
        if value is not None and value != () and value is not False:
            data[name] = value
    return data


def item_from_dict(kind: str, data: dict[str, Any]) -> Item:
    """Rebuild an item stored with `item_to_dict`."""
    if kind == "agent" and "tool_calls" in data:
        data = {**data, "tool_calls": tuple(ToolCall(*call) for call in data["tool_calls"])}
    item: Item = _TYPES[kind](**data)
    return item


def speaker(item: Item) -> str | None:
    """The agent an item belongs to, if any."""
    if isinstance(item, AgentReply | ToolOutcome | ContinuationPrompt):
        return item.agent
    if isinstance(item, HandoffRecord):
        return item.source
    return None


def view_for(agent: str, instructions: str, items: Sequence[Item]) -> tuple[ChatMessage, ...]:
    """The messages `agent` is shown: its instructions, then its view of the transcript."""
    results = {item.call_id: item for item in items if isinstance(item, ToolOutcome)}
    messages = [ChatMessage("system", instructions)]
    for item in items:
        messages.extend(_render(agent, item, results))
    return tuple(messages)


def _render(agent: str, item: Item, results: dict[str, ToolOutcome]) -> Iterable[ChatMessage]:
    match item:
        case UserTurn(text=text):
            yield ChatMessage("user", text)
        case AgentReply(agent=author, text=text, tool_calls=calls) if author == agent:
            yield ChatMessage("assistant", text, name=_label(author), tool_calls=calls)
            for call in calls:
                outcome = results.get(call.id)
                content = outcome.content if outcome is not None else INTERRUPTED
                yield ChatMessage("tool", content, tool_call_id=call.id)
        case AgentReply(agent=author, text=text) if text:
            yield ChatMessage("assistant", f"[{author}] {text}", name=_label(author))
        case HandoffRecord(source=source, target=target, reason=reason) if source != agent:
            because = f": {reason}" if reason else "."
            note = f"[{source}] (handed the conversation to {target}{because})"
            yield ChatMessage("assistant", note, name=_label(source))
        case ContinuationPrompt(agent=author, text=text) if author == agent:
            yield ChatMessage("user", text)
        case _:
            # Own tool outcomes are emitted beside their calls; other agents' tool internals,
            # own handoffs (already shown as a call and its result) and notices stay hidden.
            return


def _label(agent: str) -> str:
    """Agent names as the `name` field of a message allows them."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in agent)[:64]


def trim_window(items: Sequence[Item], budget_tokens: int) -> list[Item]:
    """The most recent items that fit `budget_tokens`, never starting on an orphan tool result."""
    kept: list[Item] = []
    used = 0
    for item in reversed(items):
        cost = estimate_tokens(item)
        if kept and used + cost > budget_tokens:
            break
        kept.append(item)
        used += cost
    kept.reverse()
    while kept and isinstance(kept[0], ToolOutcome):
        kept.pop(0)
    return kept


def estimate_tokens(item: Item) -> int:
    """A cheap token estimate: about four characters a token, plus a little per message."""
    size = 0
    for name in item.__slots__:
        value = getattr(item, name)
        if isinstance(value, str):
            size += len(value)
        elif name == "tool_calls":
            size += sum(len(call.name) + len(call.arguments) + 16 for call in value)
    return size // 4 + 4
