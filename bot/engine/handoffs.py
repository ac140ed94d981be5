"""Handoff tools: one synthetic function tool per declared edge, named `handoff_to_<target>`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from bot.models.base import ToolSpec

HANDOFF_PREFIX = "handoff_to_"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME = 64

_PARAMETERS = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "description": "Why the conversation is handed over, in one short sentence.",
        }
    },
    "additionalProperties": False,
}


def handoff_tool_name(target: str) -> str:
    """`handoff_to_<target>`, with characters outside [A-Za-z0-9_-] as `_`, at most 64 chars."""
    return (HANDOFF_PREFIX + _UNSAFE.sub("_", target))[:_MAX_NAME]


@dataclass(frozen=True, slots=True)
class Edge:
    """A declared handoff `source -> target`, with the reason the model reads when routing."""

    source: str
    target: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HandoffTool:
    """The tool an agent calls to hand the conversation to `target`."""

    name: str
    target: str
    description: str

    @property
    def spec(self) -> ToolSpec:
        """The tool as offered to the model: one optional string argument, `reason`."""
        return ToolSpec(self.name, self.description, _PARAMETERS)


def handoff_reason(arguments: str) -> str | None:
    """The `reason` argument of a handoff call; malformed arguments simply give no reason."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason.strip() or None if isinstance(reason, str) else None


def looks_like_handoff(name: str) -> bool:
    """Whether a tool name is in the handoff namespace (declared for this agent or not)."""
    return name.startswith(HANDOFF_PREFIX)
