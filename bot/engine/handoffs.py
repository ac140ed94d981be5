"""Handoff tools: one synthetic function tool per declared edge, named `handoff_to_<target>`.

Besides its `reason`, an edge may declare arguments the handoff carries (an order id, a
priority), each with a type; they are validated with pydantic when the call comes (a call with
bad ones is refused with the error, so the model can call again), stored with the handoff,
shown to the target and on a review card. An edge's `on_handoff` hook runs when the handoff is
made; its failure is reported and the handoff still happens.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, ValidationError, create_model

from bot.engine.text import why_not_json
from bot.models.base import ToolSpec

log = logging.getLogger(__name__)

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


ArgumentType = Literal["string", "integer", "number", "boolean"]
_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


@dataclass(frozen=True, slots=True)
class HandoffArgument:
    """An argument a handoff carries besides its reason."""

    name: str
    type: ArgumentType = "string"
    description: str = ""
    required: bool = True
    choices: tuple[str | int | float, ...] = ()  # when given, the only values allowed


@dataclass(frozen=True, slots=True)
class HandoffInfo:
    """What an `on_handoff` hook is given."""

    source: str
    target: str
    reason: str | None
    data: Mapping[str, Any]


HandoffHook = Callable[[HandoffInfo], Any] | Callable[[HandoffInfo], Awaitable[Any]]
EdgeCondition = Callable[[Sequence[Any]], bool]  # the transcript -> whether the edge is offered


@dataclass(frozen=True, slots=True)
class History:
    """What a handoff's target sees of the conversation before the handoff: all of it
    (`full`), its last `last` messages, or only the `summary` the source writes as an argument of
    the handoff; always with the customer's latest message."""

    mode: Literal["full", "last", "summary"] = "full"
    last: int = 0


FULL = History()
SUMMARY_ARGUMENT = HandoffArgument(
    "summary",
    "string",
    "A short summary of the conversation so far for the next agent, who sees it instead of "
    "the earlier messages: the customer's request, what is known, what was done.",
)


@dataclass(frozen=True, slots=True)
class Edge:
    """A declared handoff `source -> target`, with the reason the model reads when routing,
    the arguments it carries and the hook run when it happens."""

    source: str
    target: str
    reason: str | None = None
    arguments: tuple[HandoffArgument, ...] = ()
    on_handoff: HandoffHook | None = field(default=None, compare=False)
    when: EdgeCondition | None = field(default=None, compare=False)
    history: History = FULL


@dataclass(frozen=True, slots=True)
class HandoffTool:
    """The tool an agent calls to hand the conversation to `target` (with the edge's
    arguments, hook, condition and history rule)."""

    name: str
    target: str
    description: str
    arguments: tuple[HandoffArgument, ...] = ()
    on_handoff: HandoffHook | None = field(default=None, compare=False)
    when: EdgeCondition | None = field(default=None, compare=False)
    history: History = FULL

    def enabled(self, items: Sequence[Any]) -> bool:
        """Whether the edge is offered now: no condition, or it holds (one that fails: no)."""
        if self.when is None:
            return True
        try:
            return bool(self.when(items))
        except Exception as exc:
            log.warning(
                "the condition of the handoff to %s failed (%s): not offered", self.target, exc
            )
            return False

    @property
    def spec(self) -> ToolSpec:
        """The tool as offered to the model: an optional `reason`, and the edge's arguments."""
        if not self.arguments:
            return ToolSpec(self.name, self.description, _PARAMETERS)
        properties = dict(_PARAMETERS["properties"])  # type: ignore[call-overload]
        for argument in self.arguments:
            schema: dict[str, Any] = {"type": argument.type}
            if argument.description:
                schema["description"] = argument.description
            if argument.choices:
                schema["enum"] = list(argument.choices)
            properties[argument.name] = schema
        required = [argument.name for argument in self.arguments if argument.required]
        parameters = {**_PARAMETERS, "properties": properties}
        return ToolSpec(self.name, self.description, parameters | {"required": required})

    def data(self, arguments: str) -> tuple[dict[str, Any], str | None]:
        """The edge's arguments from a call (JSON text), validated; or an error saying what
        is wrong with them. The reason is read apart (`handoff_reason`)."""
        if not self.arguments:
            return {}, None
        try:
            given = json.loads(arguments or "{}")
        except ValueError as exc:  # JSONDecodeError, or a number too long to read
            return {}, f"the arguments are not valid JSON ({why_not_json(exc)})"
        if not isinstance(given, dict):
            return {}, "the arguments must be a JSON object"
        given.pop("reason", None)
        try:
            parsed = _model(self.arguments).model_validate(given)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
                for error in exc.errors()
            )
            return {}, f"invalid arguments for {self.name}: {details}"
        return {k: v for k, v in parsed.model_dump().items() if v is not None}, None


@functools.lru_cache(maxsize=256)
def _model(arguments: tuple[HandoffArgument, ...]) -> Any:
    """The pydantic model of a handoff's arguments (built once per edge)."""
    fields: dict[str, Any] = {}
    for argument in arguments:
        kind: Any = _TYPES[argument.type]
        if argument.choices:
            kind = Literal[argument.choices]
        fields[argument.name] = (kind, ...) if argument.required else (kind | None, None)
    return create_model("handoff_arguments", __config__=ConfigDict(extra="ignore"), **fields)


def handoff_reason(arguments: str) -> str | None:
    """The `reason` argument of a handoff call; malformed arguments simply give no reason."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:  # JSONDecodeError, or a number too long to read
        return None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason.strip() or None if isinstance(reason, str) else None


def looks_like_handoff(name: str) -> bool:
    """Whether a tool name is in the handoff namespace (declared for this agent or not)."""
    return name.startswith(HANDOFF_PREFIX)
