"""Load a workflow from YAML through `HandoffBuilder`; errors name the file, field and fix."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.engine.agents import Agent, Persona
from bot.engine.errors import FileError, Problem, WorkflowError
from bot.engine.tools import FunctionTool, function_tool
from bot.engine.workflow import HandoffBuilder, Workflow


class Strict(BaseModel):
    """A mapping of fields, none of them unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=BaseModel)


class PersonaSpec(Strict):
    """`persona:` of an agent: how it appears in chat."""

    name: str | None = None
    emoji: str | None = Field(default=None, pattern=r"^:[a-z0-9_+\-]+:$")
    avatar_url: str | None = Field(default=None, pattern=r"^https?://")


class AgentSpec(Strict):
    """One entry of `agents:`."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    instructions: str = Field(min_length=1)
    persona: PersonaSpec | None = None
    tools: list[str] = []
    model: str | None = None
    review: Literal["moderators"] | None = None


class HandoffSpec(Strict):
    """One entry of `handoffs:`: edges from one agent to one or more others."""

    source: str = Field(alias="from")
    to: list[str] | str
    reason: str | None = None


class AutonomySpec(Strict):
    """`autonomous:`: agents that continue without waiting for the user."""

    agents: list[str] | Literal["all"] = "all"
    prompts: dict[str, str] = {}
    turn_limits: dict[str, int] = {}


class WorkflowSpec(Strict):
    """The whole workflow file."""

    name: str | None = None
    description: str = ""
    start: str
    agents: list[AgentSpec] = Field(min_length=1)
    handoffs: list[HandoffSpec] = []
    return_to_previous: bool = True
    autonomous: AutonomySpec | None = None
    max_handoffs_per_turn: int = 5
    max_model_calls_per_turn: int = 12
    termination: str | None = None


_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it, or check its spelling against the README",
    "string_type": "write a text value",
    "list_type": "write a list",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "int_type": "write a whole number",
    "int_parsing": "write a whole number",
    "string_pattern_mismatch": "see the README for the expected form",
    "string_too_short": "write a non-empty value",
    "too_short": "add at least one entry",
    "literal_error": "use one of the listed values",
    "model_type": "write a mapping of fields",
    "dict_type": "write a mapping",
}


def load_workflow(path: str | Path) -> Workflow:
    """Read, validate and build the workflow in `path`; raise `WorkflowError` naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(
            [Problem("file", f"cannot be read ({exc.strerror})", "check the path")], source
        ) from exc
    return parse_workflow(text, source=source, default_name=Path(path).stem)


def parse_workflow(
    text: str, *, source: str = "<workflow>", default_name: str = "workflow"
) -> Workflow:
    """Build a workflow from YAML text; `source` names it in errors."""
    spec = read_spec(
        text, source, WorkflowSpec, WorkflowError, "workflow", "`start:` and `agents:`"
    )
    try:
        return _build(spec, default_name)
    except WorkflowError as exc:
        raise WorkflowError(exc.problems, source) from None


def read_spec(
    text: str, source: str, spec: type[S], error: type[FileError], kind: str, first: str
) -> S:
    """YAML text validated against `spec`; else `error` lists every problem with its field and
    fix. `kind` names the file's kind, `first` the fields it starts with."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or "is not valid YAML"
        raise error(
            [Problem(where, str(problem), "fix the YAML syntax (indentation, quotes, colons)")],
            source,
        ) from None
    if not isinstance(data, dict):
        raise error(
            [Problem("file", f"is not a mapping of {kind} fields", f"start the file with {first}")],
            source,
        )
    try:
        return spec.model_validate(data)
    except ValidationError as exc:
        raise error([_problem(found) for found in exc.errors()], source) from None


def _problem(error: Any) -> Problem:
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind = error["type"]
    message = "is required" if kind == "missing" else error["msg"][0].lower() + error["msg"][1:]
    if kind == "extra_forbidden":
        message = "is not a known field"
    return Problem(path or "file", message, _FIXES.get(kind, "see the README"))


def _build(spec: WorkflowSpec, default_name: str) -> Workflow:
    problems: list[Problem] = []
    agents = [_agent(index, agent, problems) for index, agent in enumerate(spec.agents)]
    builder = HandoffBuilder(participants=agents, name=spec.name or default_name)
    builder.with_start_agent(spec.start)
    for handoff in spec.handoffs:
        targets = [handoff.to] if isinstance(handoff.to, str) else handoff.to
        builder.add_handoff(handoff.source, targets, description=handoff.reason)
    builder.enable_return_to_previous(spec.return_to_previous)
    if spec.autonomous is not None:
        chosen = None if spec.autonomous.agents == "all" else spec.autonomous.agents
        builder.with_autonomous_mode(chosen, spec.autonomous.prompts, spec.autonomous.turn_limits)
    if spec.termination is not None:
        condition = _import(spec.termination, "termination", problems)
        if condition is not None:
            builder.with_termination_condition(condition)
    builder.with_limits(
        max_handoffs=spec.max_handoffs_per_turn, max_model_calls=spec.max_model_calls_per_turn
    )
    try:
        workflow = builder.build()
    except WorkflowError as exc:
        problems.extend(exc.problems)
        raise WorkflowError(problems) from None
    if problems:
        raise WorkflowError(problems)
    return workflow


def _agent(index: int, spec: AgentSpec, problems: list[Problem]) -> Agent:
    tools: list[FunctionTool] = []
    for position, dotted in enumerate(spec.tools):
        where = f"agents[{index}].tools[{position}]"
        function = _import(dotted, where, problems)
        if function is None:
            continue
        try:
            tools.append(function_tool(function))
        except TypeError as exc:
            message, _, fix = str(exc).partition("; ")
            problems.append(Problem(where, message, fix or "see the README's tool rules"))
    persona = None
    if spec.persona is not None:
        persona = Persona(
            spec.persona.name or spec.name, spec.persona.emoji, spec.persona.avatar_url
        )
    return Agent(
        name=spec.name,
        instructions=spec.instructions,
        description=spec.description,
        persona=persona,
        tools=tuple(tools),
        model=spec.model,
        review=spec.review == "moderators",
    )


def _import(dotted: str, field: str, problems: list[Problem]) -> Callable[..., Any] | None:
    """Import `package.module.function` (or `package.module:function`)."""
    module_name, _, attribute = dotted.replace(":", ".").rpartition(".")
    fix = "give the dotted path of a Python function the bot can import, e.g. mypkg.tools.lookup"
    if not module_name:
        problems.append(Problem(field, f"{dotted!r} is not a dotted path", fix))
        return None
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        problems.append(
            Problem(field, f"cannot import {dotted!r} ({type(exc).__name__}: {exc})", fix)
        )
        return None
    if not callable(found):
        problems.append(Problem(field, f"{dotted!r} is not callable", fix))
        return None
    return found  # type: ignore[no-any-return]
