"""A stored conversation as Markdown (for people) or JSON (for programs)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from bot.engine.transcript import (
    AgentReply,
    ContinuationPrompt,
    HandoffRecord,
    Item,
    ModeratorMessage,
    Notice,
    ToolOutcome,
    UserTurn,
    item_to_dict,
)
from bot.store.values import Entry, ModelCallRecord, Session


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def to_json(
    session: Session, entries: Sequence[Entry], calls: Sequence[ModelCallRecord] = ()
) -> str:
    """The session, every transcript entry and every model call, as one JSON document."""
    document: dict[str, Any] = {
        "session": {
            "id": session.id,
            "platform": session.key.platform,
            "channel": session.key.channel,
            "thread": session.key.thread,
            "workflow": session.workflow,
            "active_agent": session.active_agent,
            "status": session.status,
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "model_calls": session.model_calls,
            "prompt_tokens": session.prompt_tokens,
            "completion_tokens": session.completion_tokens,
        },
        "transcript": [
            {"seq": entry.seq, "at": entry.at, "kind": entry.item.kind, **item_to_dict(entry.item)}
            for entry in entries
        ],
        "model_calls": [
            {
                "seq": call.seq,
                "at": call.at,
                "agent": call.usage.agent,
                "model": call.usage.model,
                "prompt_tokens": call.usage.prompt_tokens,
                "completion_tokens": call.usage.completion_tokens,
            }
            for call in calls
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def to_markdown(
    session: Session, entries: Sequence[Entry], calls: Sequence[ModelCallRecord] = ()
) -> str:
    """A readable transcript: who said what, handoffs, tool calls with results, model usage."""
    lines = [
        f"# Conversation {session.id}: {session.key}",
        "",
        f"Workflow `{session.workflow}`, status **{session.status}**, "
        f"active agent **{session.active_agent}**, last update {_when(session.updated_at)}.",
        f"Model usage: {session.model_calls} calls, {session.prompt_tokens} prompt + "
        f"{session.completion_tokens} completion tokens.",
        "",
    ]
    usage = {call.seq: call.usage for call in calls}
    for entry in entries:
        lines += item_lines(entry.item, _when(entry.at))
        if entry.seq in usage:
            spent = usage[entry.seq]
            lines.append(
                f"- _model {spent.model or 'default'}: {spent.prompt_tokens} prompt + "
                f"{spent.completion_tokens} completion tokens_"
            )
        lines.append("")
    return "\n".join(lines)


def item_lines(item: Item, stamp: str | None = None) -> list[str]:
    """One transcript item as Markdown lines: who said what, handoffs, tool calls, notices."""
    when = f" ({stamp})" if stamp else ""
    match item:
        case UserTurn(text=text, author=author):
            return [f"**{author}**{when}: {text}"]
        case AgentReply(agent=agent, text=text, tool_calls=tool_calls):
            said = [f"**{agent}**{when}: {text}"] if text else []
            return said + [
                f"- _{agent} called `{call.name}` with `{call.arguments}`_" for call in tool_calls
            ]
        case ToolOutcome(name=name, content=content, is_error=is_error):
            return [f"- _{name} {'error' if is_error else 'result'}: {content}_"]
        case HandoffRecord(source=source, target=target, reason=reason):
            because = f": {reason}" if reason else ""
            return [f"> {source} handed the conversation to {target}{because}"]
        case ContinuationPrompt(agent=agent):
            return [f"- _{agent} was prompted to continue on its own_"]
        case Notice(text=text):
            return [f"> Notice: {text}"]
        case ModeratorMessage(moderator=moderator, text=text):
            return [f"**Moderator {moderator}**{when}: {text}"]
    return []
