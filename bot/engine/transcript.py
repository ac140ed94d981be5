"""Transcript items, and the view of them each agent is given.

The transcript is append-only and shared. Each agent sees the users' messages and every agent's
*text* replies, other agents' attributed by the message's `name`; it sees its own tool calls with
their results, and never another agent's tool internals. Every tool call in a view has a result.

The view is a shape every model handles: a handoff reaches its target as a note in its
instructions, which it cannot take for its own words; no message content carries a `[Name]` label
for a model to imitate; and a request ends on the customer's words (or the agent's own tool
results), never on an assistant message, which some servers take as the start of the reply to
write, and stop at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.engine.guardrails import tripped
from bot.models.base import JUST_HANDED, ChatMessage, ToolCall, message_name

Kind = Literal["user", "agent", "tool", "handoff", "prompt", "notice", "moderator"]


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
    data: dict[str, Any] | None = None  # the arguments the edge declares, as given
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


@dataclass(frozen=True, slots=True)
class ModeratorMessage:
    """A human moderator's words in the thread (or a review outcome); every agent sees them."""

    moderator: str
    text: str
    kind: Literal["moderator"] = "moderator"


Item = (
    UserTurn
    | AgentReply
    | ToolOutcome
    | HandoffRecord
    | ContinuationPrompt
    | Notice
    | ModeratorMessage
)

_TYPES: dict[str, type[Any]] = {
    "user": UserTurn,
    "agent": AgentReply,
    "tool": ToolOutcome,
    "handoff": HandoffRecord,
    "prompt": ContinuationPrompt,
    "notice": Notice,
    "moderator": ModeratorMessage,
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


def view_for(
    agent: str, instructions: str, items: Sequence[Item], *, pipeline: bool = False
) -> tuple[ChatMessage, ...]:
    """The messages `agent` is shown: its instructions, then its view of the transcript.

    Own tool outcomes are emitted beside their calls (a call with none gets `INTERRUPTED`);
    other agents' tool internals, own handoff records (already a call and its result) and
    notices stay hidden. What other agents did since the customer's last message (a handoff to
    this agent, what they told the customer) joins the instructions as a note, so the request
    ends on the customer's words; earlier handoffs are not shown (their replies are). A plain
    loop: this runs on every model call over the whole window.
    """
    last_user = -1
    for index, item in enumerate(items):
        if item.kind == "user":
            last_user = index
    results: dict[str, str] | None = None
    notes: list[str] = []
    messages = [ChatMessage("system", instructions)]
    add = messages.append
    for index, item in enumerate(items):
        kind = item.kind
        recent = index > last_user
        if kind == "user":
            add(ChatMessage("user", item.text))  # type: ignore[union-attr]
        elif kind == "agent":
            reply: AgentReply = item  # type: ignore[assignment]
            if reply.agent != agent:
                if reply.text and recent:
                    said = "wrote, for the next step" if pipeline else "told the customer"
                    notes.append(f"{reply.agent} {said}: {reply.text}")
                elif reply.text:
                    add(ChatMessage("assistant", reply.text, message_name(reply.agent)))
            elif reply.text or reply.tool_calls:
                add(ChatMessage("assistant", reply.text, message_name(agent), reply.tool_calls))
                if reply.tool_calls:
                    if results is None:
                        results = _own_results(agent, items)
                    for call in reply.tool_calls:
                        add(
                            ChatMessage(
                                "tool", results.get(call.id, INTERRUPTED), None, (), call.id
                            )
                        )
        elif kind == "handoff":
            record: HandoffRecord = item  # type: ignore[assignment]
            if record.source != agent and recent:
                notes.append(handoff_note(record, agent))
        elif kind == "prompt" and item.agent == agent:  # type: ignore[union-attr]
            add(ChatMessage("user", item.text))  # type: ignore[union-attr]
        elif kind == "notice" and messages[-1].role == "user" and _refused(item):
            messages.pop()  # a message an input guardrail refused is never shown to a model
        elif kind == "moderator":
            said = f"A moderator (a person on the support team) wrote: {item.text}"  # type: ignore[union-attr]
            if recent:
                notes.append(said)
            else:
                add(ChatMessage("system", said))
    if notes:
        messages[0] = ChatMessage("system", "\n\n".join([instructions, *notes]))
    if messages[-1].role == "assistant":  # never reached by a turn today; kept as a guarantee
        add(ChatMessage("system", f"Go on with the conversation as {agent}."))
    return tuple(messages)


def _refused(item: Item) -> bool:
    found = tripped(item.text) if isinstance(item, Notice) else None
    return found is not None and found[1] == "input"


def handoff_note(record: HandoffRecord, reader: str) -> str:
    """A handoff as another agent reads it."""
    because = f" (reason: {record.reason})" if record.reason else ""
    data = dict(record.data or {})
    summary = data.pop("summary", None)
    if data:
        because += " with " + ", ".join(f"{k}={v!r}" for k, v in data.items())
    if record.target != reader:
        return f"{record.source} handed this conversation to {record.target}{because}."
    told = f" Their summary of the conversation so far: {summary}" if summary else ""
    return (
        f"{record.source} {JUST_HANDED}{because}.{told} Answer the customer's last message "
        "yourself."
    )


def _own_results(agent: str, items: Sequence[Item]) -> dict[str, str]:
    return {
        item.call_id: item.content
        for item in items
        if isinstance(item, ToolOutcome) and item.agent == agent
    }


def trim_window(
    items: Sequence[Item], budget_tokens: int, costs: Sequence[int] | None = None
) -> list[Item]:
    """The most recent items that fit `budget_tokens`, never starting on an orphan tool result.

    `costs` are the items' token estimates when the caller already has them.
    """
    if costs is None:
        costs = [estimate_tokens(item) for item in items]
    used = 0
    start = len(items)
    while start > 0 and (start == len(items) or used + costs[start - 1] <= budget_tokens):
        start -= 1
        used += costs[start]
    while start < len(items) and isinstance(items[start], ToolOutcome):
        start += 1
    return list(items[start:])


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
