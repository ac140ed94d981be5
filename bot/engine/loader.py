"""Load a workflow from YAML through `HandoffBuilder`; errors name the file, field and fix."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.engine import guardrails
from bot.engine.agents import Agent, McpServer, Persona
from bot.engine.errors import FileError, Problem, WorkflowError
from bot.engine.guardrails import NONE, Guardrail, Guardrails
from bot.engine.handoffs import HandoffArgument, History
from bot.engine.tools import DEFAULT_TIMEOUT_S, FunctionTool, function_tool
from bot.engine.workflow import HandoffBuilder, SequentialBuilder, Workflow


class Strict(BaseModel):
    """A mapping of fields, none of them unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=BaseModel)


class PersonaSpec(Strict):
    """`persona:` of an agent: how it appears in chat."""

    name: str | None = None
    emoji: str | None = Field(default=None, pattern=r"^:[a-z0-9_+\-]+:$")
    avatar_url: str | None = Field(default=None, pattern=r"^https?://")


class ToolSpecEntry(Strict):
    """One entry of an agent's `tools:` written as a mapping: the function, and whether its
    calls need a moderator's approval (always, or `when` a function of the arguments says so)."""

    function: str
    approval: Literal["moderators"] | None = None
    when: str | None = None
    timeout: float | None = Field(default=None, gt=0, le=3600)


class McpSpec(Strict):
    """One entry of an agent's `mcp:`: a server run over stdio, or one at a URL."""

    command: str | None = Field(default=None, min_length=1)
    args: list[str] = []
    env: dict[str, str] = {}
    url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _one_way(self) -> McpSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (stdio) or `url` (streamable HTTP)")
        if self.url is not None and (self.args or self.env):
            raise ValueError("`args` and `env` are for a `command`, not a `url`")
        return self


class GuardSpec(Strict):
    """A built-in guardrail: exactly one of its fields."""

    max_length: int | None = Field(default=None, ge=1)
    blocked_words: list[str] | None = Field(default=None, min_length=1)
    redact_pii: Literal[True] | None = None

    @model_validator(mode="after")
    def _one(self) -> GuardSpec:
        if len(self.model_fields_set) != 1:
            raise ValueError("give one of `max_length`, `blocked_words`, `redact_pii` per entry")
        return self


class GuardrailsSpec(Strict):
    """`guardrails:` of the workflow or an agent: checks of what comes in and goes out."""

    input: list[str | GuardSpec] = []
    output: list[str | GuardSpec] = []


class AgentSpec(Strict):
    """One entry of `agents:`."""

    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    instructions: str = Field(min_length=1)
    persona: PersonaSpec | None = None
    tools: list[str | ToolSpecEntry] = []
    mcp: list[McpSpec] = []
    model: str | None = None
    review: Literal["moderators"] | None = None
    handoff_notice: str | None = Field(default=None, max_length=300)
    guardrails: GuardrailsSpec | None = None


class ArgumentSpec(Strict):
    """One of a handoff's `arguments:`: what it carries besides the reason."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    description: str = Field(default="", max_length=300)
    required: bool = True
    enum: list[str | int | float] | None = Field(default=None, min_length=1)


class LastSpec(Strict):
    """`history: {last: N}`: the target sees the last N messages before the handoff."""

    last: int = Field(ge=1, le=1000)


class HandoffSpec(Strict):
    """One entry of `handoffs:`: edges from one agent to one or more others."""

    source: str = Field(alias="from")
    to: list[str] | str
    reason: str | None = None
    arguments: dict[str, ArgumentSpec] = {}
    on_handoff: str | None = None
    when: str | None = None
    history: Literal["full", "summary"] | LastSpec = "full"


class AutonomySpec(Strict):
    """`autonomous:`: agents that continue without waiting for the user."""

    agents: list[str] | Literal["all"] = "all"
    prompts: dict[str, str] = {}
    turn_limits: dict[str, int] = {}


class WorkflowSpec(Strict):
    """The whole workflow file."""

    name: str | None = None
    description: str = ""
    kind: Literal["handoff", "sequential"] = "handoff"
    review_after: list[str] = []
    start: str
    agents: list[AgentSpec] = Field(min_length=1)
    handoffs: list[HandoffSpec] = []
    return_to_previous: bool = True
    autonomous: AutonomySpec | None = None
    max_handoffs_per_turn: int = 5
    max_model_calls_per_turn: int = 12
    termination: str | None = None
    guardrails: GuardrailsSpec | None = None


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
    "value_error": "see the README",
    "greater_than": "write a larger number",
    "less_than_equal": "write a smaller number",
}


SHIPPED = Path(__file__).parents[1] / "workflows"  # installed with the package


def shipped_workflows() -> list[str]:
    """The names of the workflows that come with Switchboard."""
    return sorted(path.stem for path in SHIPPED.glob("*.yaml"))


def find_workflow(given: str | Path) -> Path:
    """A workflow file: `given` if it exists, else the shipped workflow of that name
    ("helpdesk", or "workflows/helpdesk.yaml" run from another folder)."""
    path = Path(given)
    if path.exists():
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    shipped = SHIPPED / f"{name}.yaml"
    if path.parent in (Path("."), Path("workflows")) and shipped.exists():
        return shipped
    return path


def load_workflow(path: str | Path) -> Workflow:
    """Read, validate and build the workflow in `path` (a file, or a shipped workflow's name);
    raise `WorkflowError` naming the file."""
    found = find_workflow(path)
    source = str(path)
    try:
        text = found.read_text(encoding="utf-8")
    except OSError as exc:
        fix = (
            "give the path of a workflow file (--workflow or BOT_WORKFLOW), or the name of a "
            f"shipped one: {', '.join(shipped_workflows())}"
        )
        raise WorkflowError(
            [Problem("file", f"cannot be read ({exc.strerror})", fix)], source
        ) from exc
    return parse_workflow(text, source=source, default_name=found.stem)


def parse_workflow(
    text: str, *, source: str = "<workflow>", default_name: str = "workflow"
) -> Workflow:
    """Build a workflow from YAML text; `source` names it in errors.

    Every problem is reported at once: a schema problem in one entry does not stop the checks
    of the others, nor those of the graph (unknown or duplicate agents, the start agent) and of
    the tools. Only a file that is not YAML, or not a mapping, stops at that.
    """
    data = read_yaml(text, source, WorkflowError, "workflow", "`start:` and `agents:`")
    listed = data.get("agents")
    first = listed[0] if isinstance(listed, list) and listed else None
    if data.get("kind") == "sequential" and "start" not in data and isinstance(first, dict):
        data = {**data, "start": first.get("name")}  # a pipeline starts with its first agent
    checked = _validate(data)
    problems = list(checked.problems)
    workflow = None
    if checked.spec is not None:
        workflow, built = _build(checked.spec, default_name, checked.kept)
        problems += [found for found in map(checked.place, built) if found is not None]
    if problems or workflow is None:
        order = list(data)
        raise WorkflowError(sorted(problems, key=lambda found: _position(found, order)), source)
    return workflow


def read_spec(
    text: str, source: str, spec: type[S], error: type[FileError], kind: str, first: str
) -> S:
    """YAML text validated against `spec`; else `error` lists every problem with its field and
    fix. `kind` names the file's kind, `first` the fields it starts with."""
    data = read_yaml(text, source, error, kind, first)
    try:
        return spec.model_validate(data)
    except ValidationError as exc:
        raise error([_problem(found) for found in _errors(exc)], source) from None


def read_yaml(
    text: str, source: str, error: type[FileError], kind: str, first: str
) -> dict[str, Any]:
    """YAML text that must hold a mapping; else `error` saying where it is not."""
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
    return data


@dataclass(frozen=True)
class _Checked:
    """A workflow file against the schema: its problems, and the valid part of it to build."""

    spec: WorkflowSpec | None  # None: not even the list of agents could be read
    problems: tuple[Problem, ...]
    kept: Mapping[str, tuple[int, ...]]  # file positions of the agents and handoffs in `spec`

    def place(self, problem: Problem) -> Problem | None:
        """A build problem in the file's terms: entries at their position in the file, and
        None for a field whose schema problem is reported already."""
        found = _ENTRY.match(problem.field)
        field = problem.field
        if found is not None:
            position = self.kept[found[1]][int(found[2])]
            field = f"{found[1]}[{position}]{field[found.end() :]}"
        for reported in self.problems:
            if field == reported.field or field.startswith(
                (f"{reported.field}.", f"{reported.field}[")
            ):
                return None
        return Problem(field, problem.message, problem.fix)


def _position(problem: Problem, order: list[str]) -> tuple[int, int]:
    """Where a problem's field is in the file: problems are listed as the file reads."""
    found = _FIELD.match(problem.field)
    if found is None or found[1] not in order:
        return (-1, -1)  # a missing field, or the whole file: first
    return (order.index(found[1]), int(found[2] or -1))


_FIELD = re.compile(r"^(\w+)(?:\[(\d+)\])?")
_ENTRY = re.compile(r"^(agents|handoffs)\[(\d+)\]")
_FILL = {"agents": {"instructions": "-"}, "handoffs": {}}  # stand-ins for required fields


def _validate(data: dict[str, Any]) -> _Checked:
    """Validate the file; where it has schema problems, keep what is valid to build and check
    too. An entry of `agents:` or `handoffs:` keeps its valid fields (an agent whose only fault
    is elsewhere than its name is still known, so handoffs to it are not reported as well); a
    broken option takes its default."""
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        errors = _errors(exc)
    else:
        return _Checked(spec, (), {name: tuple(range(len(data.get(name) or []))) for name in _FILL})
    bad: dict[tuple[Any, ...], set[str]] = {}
    for error in errors:
        loc = error["loc"]
        if loc[0] in _FILL and len(loc) > 1:
            bad.setdefault(loc[:2], set()).add(str(loc[2]) if len(loc) > 2 else "")
        else:
            bad.setdefault(loc[:1], set())
    problems = tuple(_problem(error) for error in errors)
    if ("agents",) in bad:
        return _Checked(None, problems, {})
    fields = {key: value for key, value in data.items() if (key,) not in bad}
    kept: dict[str, tuple[int, ...]] = {}
    for name, model in (("agents", AgentSpec), ("handoffs", HandoffSpec)):
        entries = [
            (position, entry)
            for position, value in enumerate(fields.get(name) or [])
            if (entry := _entry(model, value, bad.get((name, position)), _FILL[name])) is not None
        ]
        fields[name] = [entry for _, entry in entries]
        kept[name] = tuple(position for position, _ in entries)
    fields.setdefault("start", "")  # reported already; the rest is checked without it
    try:
        return _Checked(WorkflowSpec.model_validate(fields), problems, kept)
    except ValidationError:  # no agent left to build
        return _Checked(None, problems, {})


def _entry(model: type[S], value: Any, bad: set[str] | None, fill: dict[str, str]) -> S | None:
    """One entry without its broken fields, `fill` standing in for required ones; None when
    even that is not valid (say, an agent without a usable name)."""
    if bad is not None:
        if not isinstance(value, dict) or "" in bad:
            return None
        value = fill | {key: field for key, field in value.items() if key not in bad}
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _errors(exc: ValidationError) -> list[Any]:
    """The schema's errors as a person reads them: where a field takes a text or a mapping
    (`str | Spec`), only the error of the form written, and no pydantic type names in places."""
    found = []
    for error in exc.errors():
        written_a_mapping = isinstance(error.get("input"), dict)
        if (
            error["type"] in _SCALAR
            and written_a_mapping
            and _UNION_TAG.match(str(error["loc"][-1]))
        ):
            continue
        loc = tuple(part for part in error["loc"] if not _UNION_TAG.match(str(part)))
        found.append({**error, "loc": loc})
    return found


_SCALAR = ("string_type", "literal_error", "int_type", "float_type")
_UNION_TAG = re.compile(
    r"^(str|int|float|function-\w+\[.*\]|[A-Z]\w*Spec\w*|LastSpec|literal\[.*\])$"
)


def _problem(error: Any) -> Problem:
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind = error["type"]
    message = "is required" if kind == "missing" else error["msg"][0].lower() + error["msg"][1:]
    if kind == "extra_forbidden":
        message = "is not a known field"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
    return Problem(path or "file", message, _FIXES.get(kind, "see the README"))


def _build(
    spec: WorkflowSpec, default_name: str, kept: Mapping[str, tuple[int, ...]]
) -> tuple[Workflow | None, list[Problem]]:
    """The workflow, or None, and every problem of its tools, termination and graph."""
    problems: list[Problem] = []
    positions = kept["agents"]
    agents = [_agent(positions[i], agent, problems) for i, agent in enumerate(spec.agents)]
    if spec.kind == "sequential":
        return _pipeline(spec, agents, default_name, problems)
    if spec.review_after:
        fix = "set `kind: sequential`, or remove it"
        problems.append(Problem("review_after", "pauses only a sequential workflow", fix))
    builder = HandoffBuilder(participants=agents, name=spec.name or default_name)
    builder.with_start_agent(spec.start)
    for index, handoff in enumerate(spec.handoffs):
        where = f"handoffs[{index}]"
        targets = [handoff.to] if isinstance(handoff.to, str) else handoff.to
        hook = condition = None
        if handoff.on_handoff is not None:
            hook = _import(handoff.on_handoff, f"{where}.on_handoff", problems)
        if handoff.when is not None:
            field = f"{where}.when"
            condition = _plain(_import(handoff.when, field, problems), field, problems)
        given = handoff.history
        history = History("last", given.last) if isinstance(given, LastSpec) else History(given)
        builder.add_handoff(
            handoff.source,
            targets,
            description=handoff.reason,
            arguments=_arguments(handoff.arguments, where, problems),
            on_handoff=hook,
            when=condition,
            history=history,
        )
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
    builder.with_guardrails(_guardrails(spec.guardrails, "guardrails", problems))
    try:
        workflow = builder.build()
    except WorkflowError as exc:
        return None, problems + list(exc.problems)
    return (workflow if not problems else None), problems


def _pipeline(
    spec: WorkflowSpec, agents: list[Agent], default_name: str, problems: list[Problem]
) -> tuple[Workflow | None, list[Problem]]:
    """A `kind: sequential` workflow: its agents in the order listed."""
    for field, given in (
        ("handoffs", spec.handoffs),
        ("autonomous", spec.autonomous),
        ("termination", spec.termination),
    ):
        if given:
            fix = "remove it, or use a handoff workflow (no `kind:`)"
            problems.append(Problem(field, "has no meaning in a sequential workflow", fix))
    if agents and spec.start != agents[0].name:
        fix = f"list {spec.start!r} first, or leave `start:` out"
        problems.append(Problem("start", "a pipeline starts with the first agent listed", fix))
    builder = SequentialBuilder(agents, name=spec.name or default_name)
    builder.with_review_after(*spec.review_after)
    builder.with_guardrails(_guardrails(spec.guardrails, "guardrails", problems))
    builder.with_limits(max_model_calls=spec.max_model_calls_per_turn)
    try:
        workflow = builder.build()
    except WorkflowError as exc:
        return None, problems + list(exc.problems)
    return (workflow if not problems else None), problems


def _arguments(
    given: Mapping[str, ArgumentSpec], where: str, problems: list[Problem]
) -> tuple[HandoffArgument, ...]:
    """A handoff's declared arguments; a name a model cannot use is a problem of the file."""
    arguments = []
    for name, spec in given.items():
        if not _ARGUMENT.match(name) or name == "reason":
            fix = "use letters, digits and _ (starting with a letter), and not `reason`"
            problems.append(Problem(f"{where}.arguments.{name}", "is not a usable name", fix))
            continue
        choices = tuple(spec.enum or ())
        arguments.append(HandoffArgument(name, spec.type, spec.description, spec.required, choices))
    return tuple(arguments)


_ARGUMENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def _agent(index: int, spec: AgentSpec, problems: list[Problem]) -> Agent:
    tools: list[FunctionTool] = []
    for position, entry in enumerate(spec.tools):
        where = f"agents[{index}].tools[{position}]"
        tool = _tool(entry, where, problems)
        if tool is not None:
            tools.append(tool)
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
        handoff_notice=spec.handoff_notice,
        mcp=tuple(
            McpServer(server.command, tuple(server.args), dict(server.env), server.url)
            for server in spec.mcp
        ),
        guardrails=_guardrails(spec.guardrails, f"agents[{index}].guardrails", problems),
    )


def _guardrails(spec: GuardrailsSpec | None, where: str, problems: list[Problem]) -> Guardrails:
    """The guardrails a `guardrails:` mapping declares, built-in or imported."""
    if spec is None:
        return NONE
    stages: dict[str, list[Guardrail]] = {"input": [], "output": []}
    for stage, entries in (("input", spec.input), ("output", spec.output)):
        for position, entry in enumerate(entries):
            if isinstance(entry, str):
                field = f"{where}.{stage}[{position}]"
                function = _plain(_import(entry, field, problems), field, problems)
                if function is not None:
                    stages[stage].append(guardrails.from_function(entry, function))
            elif entry.max_length is not None:
                stages[stage].append(guardrails.max_length(entry.max_length))
            elif entry.blocked_words is not None:
                stages[stage].append(guardrails.blocked_words(entry.blocked_words))
            else:
                stages[stage].append(guardrails.redact_pii())
    return Guardrails(tuple(stages["input"]), tuple(stages["output"]))


def _tool(entry: str | ToolSpecEntry, where: str, problems: list[Problem]) -> FunctionTool | None:
    """A `tools:` entry as a tool: a dotted path, or a mapping with its approval rule."""
    spec = ToolSpecEntry(function=entry) if isinstance(entry, str) else entry
    field = where if isinstance(entry, str) else f"{where}.function"
    function = _import(spec.function, field, problems)
    approval: bool | Callable[[dict[str, Any]], bool] = spec.approval == "moderators"
    if spec.when is not None:
        if not approval:
            fix = "add `approval: moderators`, or remove `when`"
            problems.append(Problem(f"{where}.when", "is a condition for an approval", fix))
        condition = _import(spec.when, f"{where}.when", problems)
        approval = condition if condition is not None and approval else approval
    if function is None:
        return None
    try:
        return function_tool(function, timeout=spec.timeout or DEFAULT_TIMEOUT_S, approval=approval)
    except TypeError as exc:
        message, _, fix = str(exc).partition("; ")
        problems.append(Problem(field, message, fix or "see the README's tool rules"))
        return None


def _plain(
    function: Callable[..., Any] | None, field: str, problems: list[Problem]
) -> Callable[..., Any] | None:
    """A check that must answer at once: a plain function, not a coroutine function."""
    if function is not None and inspect.iscoroutinefunction(function):
        fix = "make it a plain function (def, not async def): it is asked on every step"
        problems.append(Problem(field, "is a coroutine function", fix))
        return None
    return function


def _import(dotted: str, field: str, problems: list[Problem]) -> Callable[..., Any] | None:
    """Import `package.module.function` (or `package.module:function`)."""
    module_name, _, attribute = dotted.replace(":", ".").rpartition(".")
    fix = "give the dotted path of a Python function the bot can import, e.g. mypkg.tools.lookup"
    if not module_name:
        problems.append(Problem(field, f"{dotted!r} is not a dotted path", fix))
        return None
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # a module that fails as it loads is a problem of this field too
        problems.append(
            Problem(field, f"cannot import {dotted!r} ({type(exc).__name__}: {exc})", fix)
        )
        return None
    if not callable(found):
        problems.append(Problem(field, f"{dotted!r} is not callable", fix))
        return None
    return found  # type: ignore[no-any-return]
