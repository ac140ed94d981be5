"""The declared graph of agents: `HandoffBuilder` collects it, `Workflow` is the validated value.

Validation happens in `build()` and reports every problem at once, each with a field path in the
terms of the YAML file (`agents[1].name`, `handoffs[0].to[2]`, ...) so that the loader can name the
file too. For the builder, `handoffs[i]` is the i-th `add_handoff` call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.engine.agents import Agent
from bot.engine.errors import Problem, WorkflowError
from bot.engine.guardrails import NONE, Guardrails
from bot.engine.handoffs import (
    FULL,
    HANDOFF_PREFIX,
    SUMMARY_ARGUMENT,
    Edge,
    EdgeCondition,
    HandoffArgument,
    HandoffHook,
    HandoffTool,
    History,
    handoff_tool_name,
)
from bot.engine.transcript import Item

log = logging.getLogger(__name__)

TerminationCondition = Callable[[Sequence[Item]], bool | Awaitable[bool]]
AgentRef = Agent | str

DEFAULT_CONTINUATION = (
    "The user has not replied yet. Continue the task on your own: take the next step, or hand "
    "off if another agent should take over."
)
DEFAULT_TURN_LIMIT = 3


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-user-turn guards against runaway routing."""

    max_handoffs: int = 5
    max_model_calls: int = 12


@dataclass(frozen=True, slots=True)
class Autonomy:
    """Autonomous mode for one agent: the continuation prompt and how many times it is sent."""

    prompt: str = DEFAULT_CONTINUATION
    turn_limit: int = DEFAULT_TURN_LIMIT


@dataclass(frozen=True)
class Workflow:
    """A validated, immutable workflow: a handoff graph (`HandoffBuilder`), or a fixed
    pipeline (`SequentialBuilder`: `order` set, no edges)."""

    name: str
    agents: Mapping[str, Agent]
    start: str
    edges: tuple[Edge, ...]
    return_to_previous: bool = True
    autonomy: Mapping[str, Autonomy] = field(default_factory=lambda: MappingProxyType({}))
    termination: TerminationCondition | None = None
    limits: Limits = Limits()
    guardrails: Guardrails = NONE  # for every agent
    order: tuple[str, ...] = ()  # a pipeline: these agents, in turn, on every user message
    review_after: frozenset[str] = frozenset()  # a pipeline pauses for a person after these
    warnings: tuple[str, ...] = ()
    _handoffs: Mapping[str, tuple[HandoffTool, ...]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )

    def agent(self, name: str) -> Agent:
        """The agent called `name`; an unknown name (e.g. from an old session) is an error."""
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(self.agents)
            raise WorkflowError(
                [Problem("agent", f"no agent named {name!r}", f"use one of: {known}")]
            ) from None

    @property
    def redacts_input(self) -> bool:
        """Whether personal data is masked in what customers write, before it is stored."""
        return self.guardrails.redacts_input or any(
            agent.guardrails.redacts_input for agent in self.agents.values()
        )

    def handoffs(self, source: str) -> tuple[HandoffTool, ...]:
        """The handoff tools `source` is offered: exactly its own outbound edges."""
        return self._handoffs.get(source, ())

    def targets(self, source: str) -> tuple[str, ...]:
        """Names of the agents `source` may hand off to."""
        return tuple(tool.target for tool in self.handoffs(source))

    def is_terminal(self, name: str) -> bool:
        """An agent with no outbound edges can never hand off."""
        return not self._handoffs.get(name)

    @property
    def shape(self) -> str:
        """The workflow in a few words, for `check` and `doctor`."""
        if self.sequential:
            pauses = ", ".join(name for name in self.order if name in self.review_after)
            return f"pipeline {' -> '.join(self.order)}" + (
                f", review after {pauses}" if pauses else ""
            )
        return f"{len(self.agents)} agents, {len(self.edges)} handoffs, start {self.start}"

    @property
    def sequential(self) -> bool:
        """A fixed pipeline rather than a handoff graph."""
        return bool(self.order)

    def after(self, agent: str) -> str | None:
        """In a pipeline, the agent whose step comes after `agent`'s (None after the last)."""
        at = self.order.index(agent) + 1 if agent in self.order else len(self.order)
        return self.order[at] if at < len(self.order) else None

    def entry_agent(self, active: str | None) -> str:
        """Who takes the next user message: the last speaker, or the start agent (in a
        pipeline, always the first)."""
        if self.sequential:
            return self.start
        if self.return_to_previous and active is not None and active in self.agents:
            return active
        return self.start


class HandoffBuilder:
    """Collects agents, edges and options, then `build()`s a validated `Workflow`.

    Shaped like Agent Framework's builder:
    `HandoffBuilder(participants=[...]).with_start_agent(a).add_handoff(a, [b, c]).build()`.
    """

    def __init__(self, participants: Sequence[Agent] = (), *, name: str = "workflow") -> None:
        self._name = name
        self._participants = list(participants)
        self._start: str | None = None
        self._groups: list[_Group] = []
        self._guardrails = NONE
        self._return_to_previous = True
        self._autonomy: tuple[Sequence[AgentRef] | None, Mapping[str, str], Mapping[str, int]]
        self._autonomy = ((), {}, {})
        self._termination: TerminationCondition | None = None
        self._limits = Limits()

    def participants(self, agents: Iterable[Agent]) -> HandoffBuilder:
        """Add agents to the workflow."""
        self._participants.extend(agents)
        return self

    def with_start_agent(self, agent: AgentRef) -> HandoffBuilder:
        """The agent that receives a new conversation's first message."""
        self._start = _name(agent)
        return self

    def add_handoff(
        self,
        source: AgentRef,
        targets: AgentRef | Sequence[AgentRef],
        description: str | None = None,
        *,
        arguments: Sequence[HandoffArgument] = (),
        on_handoff: HandoffHook | None = None,
        when: EdgeCondition | None = None,
        history: History = FULL,
    ) -> HandoffBuilder:
        """Declare edges `source -> target` for each target; `description` is the routing
        reason, `arguments` what the handoff carries besides it, `on_handoff` a hook run when
        it happens, `when` a condition on the transcript for the edge to be offered, `history`
        what the target sees (see `bot.engine.handoffs`)."""
        listed = [targets] if isinstance(targets, Agent | str) else list(targets)
        names = tuple(_name(t) for t in listed)
        if history.mode == "summary" and all(a.name != "summary" for a in arguments):
            arguments = (*arguments, SUMMARY_ARGUMENT)
        group = _Group(
            _name(source), names, description, tuple(arguments), on_handoff, when, history
        )
        self._groups.append(group)
        return self

    def enable_return_to_previous(self, enabled: bool = True) -> HandoffBuilder:
        """Send the user's next message to the agent that spoke last (on by default)."""
        self._return_to_previous = enabled
        return self

    def with_autonomous_mode(
        self,
        agents: Sequence[AgentRef] | None = None,
        prompts: Mapping[str, str] | None = None,
        turn_limits: Mapping[str, int] | None = None,
    ) -> HandoffBuilder:
        """Let agents continue without the user; `agents=None` means every agent."""
        self._autonomy = (agents, dict(prompts or {}), dict(turn_limits or {}))
        return self

    def with_termination_condition(self, condition: TerminationCondition) -> HandoffBuilder:
        """End the conversation when `condition(transcript)` is true after a step."""
        self._termination = condition
        return self

    def with_guardrails(self, guardrails: Guardrails) -> HandoffBuilder:
        """Input and output guardrails for every agent (`bot.engine.guardrails`)."""
        self._guardrails = guardrails
        return self

    def with_limits(self, *, max_handoffs: int = 5, max_model_calls: int = 12) -> HandoffBuilder:
        """Set the loop guard: at most this many handoffs and model calls per user turn."""
        self._limits = Limits(max_handoffs, max_model_calls)
        return self

    def build(self) -> Workflow:
        """Validate everything and return the immutable `Workflow`; raise `WorkflowError`."""
        problems: list[Problem] = []
        agents = self._check_agents(problems)
        start = self._check_start(agents, problems)
        edges = self._check_edges(agents, problems)
        autonomy = self._check_autonomy(agents, problems)
        if self._termination is not None and not callable(self._termination):
            problems.append(
                Problem("termination", "is not callable", "pass a function(transcript) -> bool")
            )
        for label, value in (
            ("max_handoffs_per_turn", self._limits.max_handoffs),
            ("max_model_calls_per_turn", self._limits.max_model_calls),
        ):
            if value < 1:
                problems.append(Problem(label, f"must be at least 1, got {value}", "raise it"))
        handoffs = _synthesise(agents, edges, problems)
        if problems:
            raise WorkflowError(problems)
        assert start is not None
        return Workflow(
            name=self._name,
            agents=MappingProxyType(agents),
            start=start,
            edges=edges,
            return_to_previous=self._return_to_previous,
            autonomy=MappingProxyType(autonomy),
            termination=self._termination,
            limits=self._limits,
            guardrails=self._guardrails,
            warnings=_warn(_unreachable(agents, start, edges) + _tool_names(agents)),
            _handoffs=MappingProxyType(handoffs),
        )

    def _check_agents(self, problems: list[Problem]) -> dict[str, Agent]:
        agents: dict[str, Agent] = {}
        if not self._participants:
            problems.append(Problem("agents", "no agents declared", "declare at least one agent"))
        for index, agent in enumerate(self._participants):
            where = f"agents[{index}].name"
            if not isinstance(agent, Agent):
                problems.append(
                    Problem(
                        f"agents[{index}]",
                        f"is a {type(agent).__name__}, not an Agent",
                        "pass Agent(name, instructions, ...) for every participant",
                    )
                )
            elif not agent.name.strip():
                problems.append(Problem(where, "is empty", "give every agent a name"))
            elif agent.name in agents:
                problems.append(
                    Problem(where, f"duplicate agent name {agent.name!r}", "make names unique")
                )
            else:
                agents[agent.name] = agent
        return agents

    def _check_start(self, agents: Mapping[str, Agent], problems: list[Problem]) -> str | None:
        if self._start is None:
            if agents:
                problems.append(
                    Problem("start", "no start agent", f"set start to one of: {_list(agents)}")
                )
            return None
        if self._start not in agents:
            problems.append(
                Problem("start", f"unknown agent {self._start!r}", f"use one of: {_list(agents)}")
            )
            return None
        return self._start

    def _check_edges(
        self, agents: Mapping[str, Agent], problems: list[Problem]
    ) -> tuple[Edge, ...]:
        if not self._groups:
            # The default mesh: everyone may hand off to everyone else.
            return tuple(Edge(s, t) for s in agents for t in agents if s != t)
        edges: dict[tuple[str, str], Edge] = {}
        for index, group in enumerate(self._groups):
            source, targets = group.source, group.targets
            if source not in agents:
                problems.append(
                    Problem(
                        f"handoffs[{index}].from",
                        f"unknown agent {source!r}",
                        f"use one of: {_list(agents)}",
                    )
                )
            if not targets:
                problems.append(
                    Problem(f"handoffs[{index}].to", "lists no agents", "name one or more targets")
                )
            for position, target in enumerate(targets):
                where = f"handoffs[{index}].to[{position}]"
                if target not in agents:
                    problems.append(
                        Problem(where, f"unknown agent {target!r}", f"use one of: {_list(agents)}")
                    )
                elif target == source:
                    problems.append(
                        Problem(where, f"{source!r} hands off to itself", "remove the self-edge")
                    )
                elif (source, target) in edges:
                    problems.append(
                        Problem(where, f"edge {source} -> {target} is declared twice", "keep one")
                    )
                elif source in agents:
                    edges[(source, target)] = Edge(
                        source,
                        target,
                        group.reason,
                        group.arguments,
                        group.on_handoff,
                        group.when,
                        group.history,
                    )
        return tuple(edges.values())

    def _check_autonomy(
        self, agents: Mapping[str, Agent], problems: list[Problem]
    ) -> dict[str, Autonomy]:
        chosen, prompts, limits = self._autonomy
        names = list(agents) if chosen is None else [_name(agent) for agent in chosen]
        result: dict[str, Autonomy] = {}
        for name in names:
            if name not in agents:
                problems.append(
                    Problem("autonomous.agents", f"unknown agent {name!r}", f"use: {_list(agents)}")
                )
                continue
            limit = limits.get(name, DEFAULT_TURN_LIMIT)
            if limit < 1:
                problems.append(
                    Problem(
                        f"autonomous.turn_limits.{name}",
                        f"must be at least 1, got {limit}",
                        "set a positive number of turns",
                    )
                )
            result[name] = Autonomy(prompts.get(name, DEFAULT_CONTINUATION), limit)
        for label, mapping in (("prompts", prompts), ("turn_limits", limits)):
            for name in mapping:
                if name not in result and name in agents:
                    problems.append(
                        Problem(
                            f"autonomous.{label}.{name}",
                            "agent is not autonomous",
                            "add it to autonomous.agents",
                        )
                    )
                elif name not in agents:
                    problems.append(
                        Problem(
                            f"autonomous.{label}.{name}",
                            f"unknown agent {name!r}",
                            f"use one of: {_list(agents)}",
                        )
                    )
        return result


class SequentialBuilder:
    """A fixed pipeline: on every user message the agents run in the order given, each seeing
    the transcript so far, and the last one's reply goes to the customer. A review pause after
    a step (`with_review_after`) waits for a person to approve it (the pipeline goes on) or
    reject it (the step is done again), as a case.

    Shaped like Agent Framework's `SequentialBuilder(participants=[...]).build()`.
    """

    def __init__(self, participants: Sequence[Agent] = (), *, name: str = "workflow") -> None:
        self._name = name
        self._participants = list(participants)
        self._review_after: list[str] = []
        self._guardrails = NONE
        self._limits = Limits()

    def with_review_after(self, *agents: AgentRef) -> SequentialBuilder:
        """Pause after these agents' steps until a person approves or rejects them."""
        self._review_after.extend(_name(agent) for agent in agents)
        return self

    def with_guardrails(self, guardrails: Guardrails) -> SequentialBuilder:
        self._guardrails = guardrails
        return self

    def with_limits(self, *, max_model_calls: int = 12) -> SequentialBuilder:
        self._limits = Limits(self._limits.max_handoffs, max_model_calls)
        return self

    def build(self) -> Workflow:
        """Validate and return the pipeline as a `Workflow`; raise `WorkflowError`."""
        problems: list[Problem] = []
        agents = HandoffBuilder(self._participants)._check_agents(problems)
        order = tuple(agents)
        for name in self._review_after:
            if name not in agents:
                fix = f"use one of: {_list(agents)}"
                problems.append(Problem("review_after", f"unknown agent {name!r}", fix))
            elif order and name == order[-1]:
                problems.append(
                    Problem(
                        "review_after",
                        f"{name!r} is the last step: its reply goes to the customer",
                        "pause after an earlier step (add a last agent that sends the reply)",
                    )
                )
        if self._limits.max_model_calls < 1:
            problems.append(Problem("max_model_calls_per_turn", "must be at least 1", "raise it"))
        if problems:
            raise WorkflowError(problems)
        return Workflow(
            name=self._name,
            agents=MappingProxyType(agents),
            start=order[0],
            edges=(),
            return_to_previous=False,
            limits=self._limits,
            guardrails=self._guardrails,
            order=order,
            review_after=frozenset(self._review_after),
        )


@dataclass(frozen=True, slots=True)
class _Group:
    """One `add_handoff`: edges from `source` to each of `targets`."""

    source: str
    targets: tuple[str, ...]
    reason: str | None
    arguments: tuple[HandoffArgument, ...]
    on_handoff: HandoffHook | None
    when: EdgeCondition | None
    history: History


def _synthesise(
    agents: Mapping[str, Agent], edges: tuple[Edge, ...], problems: list[Problem]
) -> dict[str, tuple[HandoffTool, ...]]:
    """One handoff tool per outbound edge; clashing tool names are build errors."""
    handoffs: dict[str, list[HandoffTool]] = {name: [] for name in agents}
    for edge in edges:
        target = agents[edge.target]
        description = edge.reason or target.description or f"Hand off to {edge.target}."
        handoffs[edge.source].append(
            HandoffTool(
                handoff_tool_name(edge.target),
                edge.target,
                description,
                edge.arguments,
                edge.on_handoff,
                edge.when,
                edge.history,
            )
        )
    for name, tools in handoffs.items():
        owners = {tool.name: f"its tool {tool.name!r}" for tool in agents[name].function_tools}
        for tool in tools:
            if tool.name in owners:
                problems.append(
                    Problem(
                        f"agents.{name}",
                        f"handoff tool {tool.name!r} (to {tool.target!r}) clashes with "
                        f"{owners[tool.name]}",
                        "rename one of the agents or tools",
                    )
                )
            owners.setdefault(tool.name, f"the handoff to {tool.target!r}")
    return {name: tuple(tools) for name, tools in handoffs.items()}


def _unreachable(
    agents: Mapping[str, Agent], start: str, edges: tuple[Edge, ...]
) -> tuple[str, ...]:
    reached = {start}
    frontier = [start]
    while frontier:
        source = frontier.pop()
        for edge in edges:
            if edge.source == source and edge.target not in reached:
                reached.add(edge.target)
                frontier.append(edge.target)
    missing = [name for name in agents if name not in reached]
    return tuple(
        f"agent {name!r} cannot be reached from the start agent {start!r}; add a handoff to it"
        for name in missing
    )


def _tool_names(agents: Mapping[str, Agent]) -> tuple[str, ...]:
    """Instructions that name handoff tools: models repeat such names to customers."""
    return tuple(
        f"agent {name!r}: its instructions name the tool {found.group(0)}; name the agent "
        'instead ("hand off to Returns"): models repeat tool names to customers'
        for name, agent in agents.items()
        if (found := re.search(rf"{HANDOFF_PREFIX}\w+", agent.instructions)) is not None
    )


def _warn(warnings: tuple[str, ...]) -> tuple[str, ...]:
    for warning in warnings:
        log.warning("workflow: %s", warning)
    return warnings


def _name(agent: AgentRef) -> str:
    return agent if isinstance(agent, str) else str(getattr(agent, "name", agent))


def _list(agents: Iterable[str]) -> str:
    return ", ".join(sorted(agents)) or "(none declared)"
