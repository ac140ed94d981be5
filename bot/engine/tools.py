"""Ordinary function tools: Python callables the model may call with JSON arguments.

Arguments are validated with pydantic from the function's type hints. Bad JSON, bad arguments and
exceptions raised by the function all become an error result the model reads; none crashes a turn.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from bot.models.base import ToolSpec

log = logging.getLogger(__name__)

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The text a tool call returns to the model, and whether it is an error."""

    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A callable with a name, a description and a pydantic model of its arguments."""

    name: str
    description: str
    function: ToolFunction = field(compare=False)
    arguments_model: Any = field(compare=False, repr=False)

    @property
    def spec(self) -> ToolSpec:
        """The tool as offered to the model."""
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return ToolSpec(self.name, self.description, schema)

    async def invoke(self, arguments: str) -> ToolOutput:
        """Validate `arguments` (JSON text), call the function, and return its output as text."""
        try:
            raw = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return ToolOutput(f"Error: arguments are not valid JSON ({exc.msg}).", is_error=True)
        if not isinstance(raw, dict):
            return ToolOutput("Error: arguments must be a JSON object.", is_error=True)
        try:
            parsed = self.arguments_model.model_validate(raw)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            return ToolOutput(f"Error: invalid arguments for {self.name}: {details}.", True)
        try:
            result = self.function(
                **{name: getattr(parsed, name) for name in type(parsed).model_fields}
            )
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.warning("tool %s raised %s", self.name, type(exc).__name__)
            return ToolOutput(f"Error: {self.name} failed: {type(exc).__name__}: {exc}", True)
        return ToolOutput(_as_text(result))


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)


def function_tool(function: ToolFunction, *, name: str | None = None) -> FunctionTool:
    """Wrap a Python function as a tool; its docstring's first paragraph is the description."""
    signature = inspect.signature(function)
    hints = inspect.get_annotations(function, eval_str=True)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {function.__name__}: *args and **kwargs are not supported")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model = create_model(
        f"{function.__name__}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    doc = inspect.getdoc(function) or f"Call {function.__name__}."
    return FunctionTool(
        name=name or function.__name__,
        description=doc.split("\n\n")[0].replace("\n", " "),
        function=function,
        arguments_model=model,
    )


def as_tool(tool: FunctionTool | ToolFunction) -> FunctionTool:
    """Accept a ready `FunctionTool` or a plain function."""
    return tool if isinstance(tool, FunctionTool) else function_tool(tool)
