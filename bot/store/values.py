"""The values the store deals in: what is stored, and what one write changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from bot.engine.transcript import Item

Status = Literal["open", "closed"]
CaseStatus = Literal["open", "approved", "rejected", "closed"]


class StoreError(Exception):
    """The store failed; the message names the operation and never holds user text."""


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Where a conversation lives: a platform, a channel, and a thread in it."""

    platform: str
    channel: str
    thread: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.channel}:{self.thread}"


@dataclass(frozen=True, slots=True)
class Session:
    """A stored conversation: who holds it, whether it is open, and its size."""

    id: int
    key: SessionKey
    workflow: str
    active_agent: str
    status: Status
    item_count: int
    created_at: float
    updated_at: float
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    taken_over_by: str | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """A conversation handed to a review agent, waiting for (or decided by) moderators."""

    id: int
    session_id: int
    key: SessionKey
    agent: str
    reason: str | None
    status: CaseStatus
    moderator: str | None
    card: str | None
    opened_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class CaseAction:
    """One moderator action on a case, as recorded."""

    action: str
    actor: str
    at: float


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model call: which agent, which model, and the tokens it took."""

    agent: str
    model: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelCallRecord:
    """A stored model call, with the transcript position of the reply it produced."""

    seq: int
    at: float
    usage: ModelUsage


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A post the bot owes a thread, as stored in the outbox (`body` is the post as a dict)."""

    id: int
    session_id: int
    key: SessionKey
    body: dict[str, Any]
    attempts: int = 0
    next_attempt_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Entry:
    """A transcript item as stored: its position and time."""

    seq: int
    at: float
    item: Item


@dataclass(frozen=True, slots=True)
class EventId:
    """An inbound platform event (a message, a retry of it): claimed once, durably."""

    platform: str
    id: str


@dataclass(frozen=True, slots=True)
class NewSession:
    """Open a conversation in `key` (its previous one, if any, must be closed)."""

    key: SessionKey
    workflow: str
    agent: str


@dataclass(frozen=True, slots=True)
class NewCase:
    """Open a review case for `agent`, with the reason the handoff gave."""

    agent: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a conversation instead of the bot: a moderator, or nobody (handed back)."""

    moderator: str | None


@dataclass(frozen=True, slots=True)
class Step:
    """One write of a conversation, applied whole or not at all.

    In order: claim `event` (a claimed one makes the step a duplicate: nothing is written), open
    `opens` or find `session_id`, append `items`, set the active `agent`, the `status` and the
    `holder`, record `usage` for the model call whose reply is the first item, open `case`,
    mark the session's `delivered` oldest unsent posts as sent, then queue `posts`.
    """

    session_id: int | None = None
    opens: NewSession | None = None
    event: EventId | None = None
    items: tuple[Item, ...] = ()
    agent: str | None = None
    status: Status | None = None
    holder: Holder | None = None
    usage: ModelUsage | None = None
    case: NewCase | None = None
    posts: tuple[dict[str, Any], ...] = ()
    delivered: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """A moderator's action on a case, applied only while the case's status is in `expect`."""

    case_id: int
    action: str
    actor: str
    expect: tuple[CaseStatus, ...]
    status: CaseStatus | None = None
    holder: Holder | None = None
    items: tuple[Item, ...] = ()
    agent: str | None = None
    session_status: Status | None = None


class Verdict(Protocol):
    """A decision about an inbound message, made by the service: the step to write, if any."""

    @property
    def step(self) -> Step | None: ...


V = TypeVar("V", bound=Verdict)


@dataclass(frozen=True, slots=True)
class Admitted(Generic[V]):
    """What `admit` did: the service's verdict, the session after it, and whether the verdict's
    event had been claimed before (a duplicate: nothing was written)."""

    verdict: V
    session: Session | None
    duplicate: bool = False
    backlog: bool = False  # the thread has posts still waiting in the outbox
