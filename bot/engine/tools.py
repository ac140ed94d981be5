"""Tools: what an agent may call, with JSON arguments. `Tool` is what the runner needs of one;
`FunctionTool` is a Python callable as a tool (MCP servers' tools are tools too, `bot.engine.mcp`).

A tool may need a moderator's approval: always, or when a condition on the call's arguments holds
(`needs_approval`). A function with a parameter named `idempotency_key` gets the call's own key
there (never offered to the model): a call run again after a crash carries the same key, so the
function can do its work once.

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
from typing import Any, Protocol, runtime_checkable

from pydantic import ConfigDict, ValidationError, create_model

from bot.engine.text import why_not_json
from bot.models.base import ToolSpec

log = logging.getLogger(__name__)

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]
Condition = Callable[[dict[str, Any]], bool]  # a call's arguments -> whether it needs approval
DEFAULT_TIMEOUT_S = 30.0
KEY_PARAMETER = "idempotency_key"


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The text a tool call returns to the model, and whether it is an error."""

    content: str
    is_error: bool = False


@runtime_checkable
class Tool(Protocol):
    """What an agent may call."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> ToolSpec:
        """The tool as offered to the model: name, description, JSON schema of its arguments."""
        ...

    async def invoke(self, arguments: str, *, key: str | None = None) -> ToolOutput:
        """Run the call (`arguments` as the model wrote them, JSON text); every failure is an
        error output, never an exception. `key` is the call's own key, the same each time it
        is run (see `KEY_PARAMETER`)."""
        ...

    def needs_approval(self, arguments: str) -> bool:
        """Whether this call must wait for a moderator's approval."""
        ...


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A callable with a name, a description and a pydantic model of its arguments.

    `approval`: False (never), True (always) or a condition on the call's arguments."""

    name: str
    description: str
    function: ToolFunction = field(compare=False)
    arguments_model: Any = field(compare=False, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S
    approval: bool | Condition = field(default=False, compare=False)
    keyed: bool = False  # the function takes `idempotency_key`

    def needs_approval(self, arguments: str) -> bool:
        """True when approval is always needed, or its condition holds for these arguments;
        a condition that cannot be evaluated (bad arguments, an error) asks for approval."""
        if not callable(self.approval):
            return self.approval
        try:
            raw = json.loads(arguments or "{}")
            parsed = self.arguments_model.model_validate(raw)
            given = {name: getattr(parsed, name) for name in type(parsed).model_fields}
            return bool(self.approval(given))
        except ValidationError:
            return False  # not a valid call: it fails as one, nothing to approve
        except Exception as exc:
            log.warning("tool %s: its approval condition failed (%s)", self.name, exc)
            return True

    @property
    def spec(self) -> ToolSpec:
        """The tool as offered to the model (built once: it is asked on every model call)."""
        return _spec(self.name, self.description, self.arguments_model)

    async def invoke(self, arguments: str, *, key: str | None = None) -> ToolOutput:
        """Validate `arguments` (JSON text), call the function, and return its output as text."""
        raw = read_arguments(arguments)
        if isinstance(raw, ToolOutput):
            return raw
        try:
            parsed = self.arguments_model.model_validate(raw)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            return ToolOutput(f"Error: invalid arguments for {self.name}: {details}.", True)
        arguments_given = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.keyed:
            arguments_given[KEY_PARAMETER] = key
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


@functools.lru_cache(maxsize=1024)
def _spec(name: str, description: str, arguments_model: Any) -> ToolSpec:
    schema = arguments_model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return ToolSpec(name, description, schema)


def read_arguments(arguments: str) -> dict[str, Any] | ToolOutput:
    """A call's arguments (JSON text, as the model wrote them) as a mapping, or the error
    result that says what is wrong with them."""
    try:
        given = json.loads(arguments or "{}")
    except ValueError as exc:  # JSONDecodeError, or a number too long to read
        return ToolOutput(f"Error: arguments are not valid JSON ({why_not_json(exc)}).", True)
    if not isinstance(given, dict):
        return ToolOutput("Error: arguments must be a JSON object.", is_error=True)
    return given


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)


def function_tool(
    function: ToolFunction,
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    approval: bool | Condition = False,
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
    keyed = KEY_PARAMETER in signature.parameters
    for param in signature.parameters.values():
        if param.name == KEY_PARAMETER:
            continue
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
        approval=approval,
        keyed=keyed,
    )


def as_tool(tool: Tool | ToolFunction) -> Tool:
    """Accept a ready tool or a plain function."""
    return tool if isinstance(tool, Tool) else function_tool(tool)
