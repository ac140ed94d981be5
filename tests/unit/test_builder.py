"""Builder validation: every bad workflow is refused with a message naming field and fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError

import pytest

from bot.engine import Agent, HandoffBuilder, WorkflowError
from tests.helpers import FRAUD, ORDERS, RETURNS, TRIAGE, shop

BAD: list[tuple[str, Callable[[], HandoffBuilder], str]] = [
    (
        "no agents",
        lambda: HandoffBuilder(participants=[]),
        "agents: no agents declared. Fix: declare at least one agent",
    ),
    (
        "duplicate names",
        lambda: HandoffBuilder(participants=[TRIAGE, Agent("Triage")]).with_start_agent(TRIAGE),
        "agents[1].name: duplicate agent name 'Triage'. Fix: make names unique",
    ),
    (
        "missing start agent",
        lambda: HandoffBuilder(participants=[TRIAGE, RETURNS]),
        "start: no start agent. Fix: set start to one of: Returns, Triage",
    ),
    (
        "unknown start agent",
        lambda: HandoffBuilder(participants=[TRIAGE]).with_start_agent("Boss"),
        "start: unknown agent 'Boss'. Fix: use one of: Triage",
    ),
    (
        "unknown source in an edge",
        lambda: (
            HandoffBuilder(participants=[TRIAGE, RETURNS])
            .with_start_agent(TRIAGE)
            .add_handoff("Refunds", [RETURNS])
        ),
        "handoffs[0].from: unknown agent 'Refunds'. Fix: use one of: Returns, Triage",
    ),
    (
        "unknown target in an edge",
        lambda: (
            HandoffBuilder(participants=[TRIAGE, RETURNS])
            .with_start_agent(TRIAGE)
            .add_handoff(TRIAGE, [RETURNS])
            .add_handoff(TRIAGE, [RETURNS, "Refunds"][1:])
        ),
        "handoffs[1].to[0]: unknown agent 'Refunds'. Fix: use one of: Returns, Triage",
    ),
    (
        "self-edge",
        lambda: (
            HandoffBuilder(participants=[TRIAGE, RETURNS])
            .with_start_agent(TRIAGE)
            .add_handoff(TRIAGE, [RETURNS, TRIAGE])
        ),
        "handoffs[0].to[1]: 'Triage' hands off to itself. Fix: remove the self-edge",
    ),
    (
        "duplicate edge",
        lambda: (
            HandoffBuilder(participants=[TRIAGE, RETURNS])
            .with_start_agent(TRIAGE)
            .add_handoff(TRIAGE, RETURNS)
            .add_handoff(TRIAGE, [RETURNS])
        ),
        "handoffs[1].to[0]: edge Triage -> Returns is declared twice. Fix: keep one",
    ),
    (
        "empty target list",
        lambda: (
            HandoffBuilder(participants=[TRIAGE, RETURNS])
            .with_start_agent(TRIAGE)
            .add_handoff(TRIAGE, [])
        ),
        "handoffs[0].to: lists no agents. Fix: name one or more targets",
    ),
    (
        "tool-name clash between two targets",
        lambda: (
            HandoffBuilder(participants=[TRIAGE, Agent("A B"), Agent("A_B")])
            .with_start_agent(TRIAGE)
            .add_handoff(TRIAGE, ["A B", "A_B"])
        ),
        "agents.Triage: handoff tool 'handoff_to_A_B' (to 'A_B') clashes with the handoff to "
        "'A B'. Fix: rename one of the agents or tools",
    ),
    (
        "tool-name clash with a function tool",
        lambda: HandoffBuilder(
            participants=[Agent("Triage", tools=(handoff_to_Returns,)), RETURNS]
        ).with_start_agent("Triage"),
        "agents.Triage: handoff tool 'handoff_to_Returns' (to 'Returns') clashes with its tool "
        "'handoff_to_Returns'. Fix: rename one of the agents or tools",
    ),
    (
        "autonomous agent unknown",
        lambda: (
            HandoffBuilder(participants=[TRIAGE])
            .with_start_agent(TRIAGE)
            .with_autonomous_mode(agents=["Ghost"])
        ),
        "autonomous.agents: unknown agent 'Ghost'. Fix: use: Triage",
    ),
    (
        "turn limit below one",
        lambda: (
            HandoffBuilder(participants=[TRIAGE])
            .with_start_agent(TRIAGE)
            .with_autonomous_mode(turn_limits={"Triage": 0})
        ),
        "autonomous.turn_limits.Triage: must be at least 1, got 0. "
        "Fix: set a positive number of turns",
    ),
    (
        "a participant that is not an Agent",
        lambda: HandoffBuilder(participants=[TRIAGE, "Returns"]).with_start_agent(TRIAGE),  # type: ignore[list-item]
        "agents[1]: is a str, not an Agent. "
        "Fix: pass Agent(name, instructions, ...) for every participant",
    ),
    (
        "loop guard of zero",
        lambda: (
            HandoffBuilder(participants=[TRIAGE])
            .with_start_agent(TRIAGE)
            .with_limits(max_handoffs=0)
        ),
        "max_handoffs_per_turn: must be at least 1, got 0. Fix: raise it",
    ),
]


def handoff_to_Returns(note: str) -> str:
    """A tool whose name collides with a handoff."""
    return note


@pytest.mark.parametrize(("case", "make", "message"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_workflows_are_refused_with_the_exact_message(
    case: str, make: Callable[[], HandoffBuilder], message: str
) -> None:
    with pytest.raises(WorkflowError) as caught:
        make().build()
    assert message in [str(problem) for problem in caught.value.problems], str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    builder = (
        HandoffBuilder(participants=[TRIAGE, Agent("Triage")])
        .with_start_agent("Boss")
        .add_handoff(TRIAGE, ["Nobody"])
    )
    with pytest.raises(WorkflowError) as caught:
        builder.build()
    fields = [problem.field for problem in caught.value.problems]
    assert fields == ["agents[1].name", "start", "handoffs[0].to[0]"]
    assert str(caught.value).count("\n") == 2


def test_unreachable_agents_are_a_warning_not_an_error() -> None:
    workflow = (
        HandoffBuilder(participants=[TRIAGE, RETURNS, ORDERS])
        .with_start_agent(TRIAGE)
        .add_handoff(TRIAGE, [RETURNS])
        .add_handoff(ORDERS, [RETURNS])
        .build()
    )
    assert workflow.warnings == (
        "agent 'Orders' cannot be reached from the start agent 'Triage'; add a handoff to it",
    )


def test_workflow_is_immutable() -> None:
    workflow = shop().build()
    with pytest.raises(FrozenInstanceError):
        workflow.start = "Returns"  # type: ignore[misc]
    with pytest.raises(TypeError):
        workflow.agents["Evil"] = FRAUD  # type: ignore[index]
    with pytest.raises(FrozenInstanceError):
        TRIAGE.name = "Other"  # type: ignore[misc]


def test_building_twice_gives_equal_independent_workflows() -> None:
    builder = shop()
    first = builder.build()
    builder.add_handoff(ORDERS, [FRAUD])
    second = builder.build()
    assert "Fraud" not in first.targets("Orders")
    assert "Fraud" in second.targets("Orders")
