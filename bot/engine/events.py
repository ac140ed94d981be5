"""What a turn produces, in order. Each event lists the transcript `records` it adds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bot.engine import transcript as t
from bot.models.base import ToolCall, Usage


@dataclass(frozen=True, slots=True)
class ModelCalled:
    """One model call finished for `agent`; its reply joins the transcript."""

    agent: str
    reply: t.AgentReply
    model: str | None = None
    usage: Usage | None = None
    shown: bool = True  # False for a pipeline's inner step: its reply is not the customer's

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.reply,)


@dataclass(frozen=True, slots=True)
class Writing:
    """`agent`'s reply as written so far (`text` raw, as the model wrote it; "" when it starts
    over); shown as it grows, never stored: the whole reply comes with `ModelCalled`."""

    agent: str
    text: str
    records: tuple[t.Item, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """Text `agent` says to the user (already recorded by the `ModelCalled` before it)."""

    agent: str
    text: str
    records: tuple[t.Item, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """`agent` called an ordinary tool (or a refused handoff); the result is recorded."""

    agent: str
    outcome: t.ToolOutcome

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.outcome,)


@dataclass(frozen=True, slots=True)
class ApprovalAsked:
    """`agent` called a tool that needs a moderator's approval: it has not run; the agent is
    told it waits (`outcome`), and a case asks moderators to approve or reject `call`."""

    agent: str
    call: ToolCall
    outcome: t.ToolOutcome

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.outcome,)


@dataclass(frozen=True, slots=True)
class Guarded:
    """A guardrail tripped (`note` records which, and why). On `input`, the customer is told
    `reply` and the model is not asked; on `output`, the agent's reply was replaced."""

    agent: str
    stage: Literal["input", "output"]
    note: t.Notice
    reply: str | None = None

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.note,)


@dataclass(frozen=True, slots=True)
class HandoffSent:
    """`source` handed the conversation to `target`, which answers next in the same turn."""

    source: str
    target: str
    reason: str | None
    outcome: t.ToolOutcome
    data: dict[str, Any] | None = None  # the edge's arguments, validated
    hook_error: str | None = None  # the edge's `on_handoff` failed (the handoff still happened)

    @property
    def records(self) -> tuple[t.Item, ...]:
        record = t.HandoffRecord(self.source, self.target, self.reason, self.data or None)
        if self.hook_error is None:
            return (self.outcome, record)
        # The note comes before the record: a stored step never ends on a notice unless the
        # turn ended (that is how a resumed turn knows it is finished).
        return (self.outcome, t.Notice(f"on_handoff failed: {self.hook_error}"), record)


@dataclass(frozen=True, slots=True)
class Continued:
    """Autonomous mode: `agent` is prompted to go on without the user."""

    agent: str
    prompt: t.ContinuationPrompt

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.prompt,)


@dataclass(frozen=True, slots=True)
class Paused:
    """A pipeline stopped after `agent`'s step, for a person to approve or reject it."""

    agent: str
    note: t.Notice

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.note,)


@dataclass(frozen=True, slots=True)
class AwaitingUser:
    """The turn ended naturally; `agent` waits for the user's next message."""

    agent: str
    records: tuple[t.Item, ...] = ()


@dataclass(frozen=True, slots=True)
class Closed:
    """The workflow's termination condition holds: the conversation is over."""

    agent: str
    reason: str = "termination condition met"
    records: tuple[t.Item, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnStopped:
    """The turn stopped early (loop guard, model failure); `notice` says so to the user."""

    agent: str
    cause: str
    notice: t.Notice

    @property
    def records(self) -> tuple[t.Item, ...]:
        return (self.notice,)


Event = (
    Writing
    | ModelCalled
    | AgentMessage
    | ToolCalled
    | ApprovalAsked
    | Guarded
    | HandoffSent
    | Continued
    | Paused
    | AwaitingUser
    | Closed
    | TurnStopped
)
