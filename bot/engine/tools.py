"""Ordinary function tools: Python callables the model may call with JSON arguments.

Arguments are validated with pydantic from the function's type hints. Bad JSON, bad arguments,
exceptions raised by the function and a call that overruns its timeout all become an error result
the model reads; none crashes a turn. A plain (sync) function runs in a worker thread, so a slow
one never blocks the event loop: other threads' turns, Slack's pings and Discord's heartbeat go on.
"""

from __future__ import annotations

import asyncio
import functools
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
DEFAULT_TIMEOUT_S = 30.0


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
    timeout: float = DEFAULT_TIMEOUT_S

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
        arguments_given = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        try:
            result = await asyncio.wait_for(self._call(arguments_given), self.timeout)
        except TimeoutError:
            log.warning("tool %s did not finish within %.0fs", self.name, self.timeout)
            return ToolOutput(
                f"Error: {self.name} did not finish within {self.timeout:g} seconds.", True
            )
        except Exception as exc:
            log.warning("tool %s raised %s", self.name, type(exc).__name__)
            return ToolOutput(f"Error: {self.name} failed: {type(exc).__name__}: {exc}", True)
        return ToolOutput(_as_text(result))

    async def _call(self, arguments: dict[str, Any]) -> Any:
        """Await a coroutine function; run anything else in a worker thread.

        A thread that overruns the timeout cannot be stopped: it finishes on its own, and its
        result is dropped.
        """
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**arguments)
        result = await asyncio.to_thread(functools.partial(self.function, **arguments))
        return await result if inspect.isawaitable(result) else result


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)


def function_tool(
    function: ToolFunction, *, name: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> FunctionTool:
    """Wrap a Python function as a tool; its docstring's first paragraph is the description.

    Raise `TypeError`, naming the function and the fix, for what cannot be offered to a model:
    `*args`/`**kwargs`, or a type hint that cannot be resolved.
    """
    label = getattr(function, "__qualname__", repr(function))
    try:
        signature = inspect.signature(function)
        hints = inspect.get_annotations(function, eval_str=True)
    except (NameError, SyntaxError, TypeError, ValueError) as exc:
        raise TypeError(
            f"tool {label}: its signature or type hints cannot be read ({type(exc).__name__}: "
            f"{exc}); import every type the hints name, at module level"
        ) from None
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"tool {label}: *args and **kwargs cannot be offered to a model; "
                "name each argument, with a type hint"
            )
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
        timeout=timeout,
    )


def as_tool(tool: FunctionTool | ToolFunction) -> FunctionTool:
    """Accept a ready `FunctionTool` or a plain function."""
    return tool if isinstance(tool, FunctionTool) else function_tool(tool)
