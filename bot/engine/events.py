"""What a turn produces, in order. Each event lists the transcript `records` it adds."""

from __future__ import annotations

from dataclasses import dataclass

from bot.engine.transcript import (
    AgentReply,
    ContinuationPrompt,
    HandoffRecord,
    Item,
    Notice,
    ToolOutcome,
)
from bot.models.base import Usage


@dataclass(frozen=True, slots=True)
class ModelCalled:
    """One model call finished for `agent`; its reply joins the transcript."""

    agent: str
    reply: AgentReply
    model: str | None = None
    usage: Usage | None = None

    @property
    def records(self) -> tuple[Item, ...]:
        return (self.reply,)


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """Text `agent` says to the user (already recorded by the `ModelCalled` before it)."""

    agent: str
    text: str
    records: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """`agent` called an ordinary tool (or a refused handoff); the result is recorded."""

    agent: str
    outcome: ToolOutcome

    @property
    def records(self) -> tuple[Item, ...]:
        return (self.outcome,)


@dataclass(frozen=True, slots=True)
class HandoffSent:
    """`source` handed the conversation to `target`, which answers next in the same turn."""

    source: str
    target: str
    reason: str | None
    outcome: ToolOutcome

    @property
    def records(self) -> tuple[Item, ...]:
        return (self.outcome, HandoffRecord(self.source, self.target, self.reason))


@dataclass(frozen=True, slots=True)
class Continued:
    """Autonomous mode: `agent` is prompted to go on without the user."""

    agent: str
    prompt: ContinuationPrompt

    @property
    def records(self) -> tuple[Item, ...]:
        return (self.prompt,)


@dataclass(frozen=True, slots=True)
class AwaitingUser:
    """The turn ended naturally; `agent` waits for the user's next message."""

    agent: str
    records: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class Closed:
    """The workflow's termination condition holds: the conversation is over."""

    agent: str
    reason: str = "termination condition met"
    records: tuple[Item, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnStopped:
    """The turn stopped early (loop guard, model failure); `notice` says so to the user."""

    agent: str
    cause: str
    notice: Notice

    @property
    def records(self) -> tuple[Item, ...]:
        return (self.notice,)


Event = (
    ModelCalled
    | AgentMessage
    | ToolCalled
    | HandoffSent
    | Continued
    | AwaitingUser
    | Closed
    | TurnStopped
)
