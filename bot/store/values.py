"""The values the store deals in: what is stored, and what one write changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from bot.engine.transcript import Item

Status = Literal["open", "closed"]
CaseStatus = Literal["open", "approved", "rejected", "closed"]
CaseKind = Literal["review", "approval", "pause"]


class StoreError(Exception):
    """The store failed; the message names the operation and never holds user text."""


class LeaseLost(StoreError):
    """Another process took the thread's lease: this one may no longer write for it."""


class Unmigrated(StoreError):
    """A read-only open found no database, no Switchboard tables, or an older schema: nothing
    is wrong with it, the bot sets it up at start-up. `version` is 0 when there is nothing yet."""

    def __init__(self, message: str, version: int, newest: int) -> None:
        super().__init__(message)
        self.version = version
        self.newest = newest


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Where a conversation lives: a platform, a channel, and a thread in it."""

    platform: str
    channel: str
    thread: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.channel}:{self.thread}"


def card_lane(platform: str, case_id: int) -> SessionKey:
    """Where a case's card posts queue: a thread of its own, so that a card never waits for a
    conversation's posts, nor they for it."""
    return SessionKey(platform, "moderators", f"case-{case_id}")


CARD_POST = {"kind": "card"}  # a post asking for the case's card as it stands when it is sent


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
class PendingCall:
    """A tool call waiting for a moderator's approval: the call as the agent made it."""

    id: str
    tool: str
    arguments: str  # JSON text, as the model wrote it
    agent: str


@dataclass(frozen=True, slots=True)
class CallResult:
    """What an approved call returned when it ran."""

    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Case:
    """A decision for moderators: a conversation handed to a review agent (`review`), or a
    tool call waiting for approval (`approval`, with the `call` and, once run, its `result`)."""

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
    kind: CaseKind = "review"
    call: PendingCall | None = None
    result: CallResult | None = None


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
    """A post the bot owes a thread, as stored in the outbox (`body` is the post as a dict).

    `turn` is the inbox row whose turn queued it; `origin` the process (or lease) that queued it;
    `placeholder` the platform reference of its turn's "working on it" post, while unreplaced,
    and `placeholder_body` that post as queued (its persona says whose it is).
    """

    id: int
    key: SessionKey
    body: dict[str, Any]
    session_id: int | None = None
    turn: int | None = None
    kind: str = "reply"
    origin: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    placeholder: str | None = None
    degraded: bool = False  # refused once for good: the next try is plain text
    placeholder_body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A post the platform refused for good, even as plain text: set aside, with why."""

    id: int
    key: SessionKey
    kind: str
    body: dict[str, Any]
    error: str | None
    created_at: float
    dead_at: float


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
    """Open a case for `agent`: a review, with the reason the handoff gave, or an approval of
    `call`."""

    agent: str
    reason: str | None
    call: PendingCall | None = None
    kind: CaseKind = "review"  # "approval" when there is a `call`


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a conversation instead of the bot: a moderator, or nobody (handed back)."""

    moderator: str | None


@dataclass(frozen=True, slots=True)
class Fence:
    """A thread's lease as one process holds it: a write carrying it is refused once another
    process has taken the lease (its token is then higher)."""

    key: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class TurnMark:
    """What a step says of the inbox message whose turn it belongs to."""

    row: int
    started: bool = False  # the step stores the message: remember where its turn begins
    done: bool = False  # the turn is over: the message is answered


@dataclass(frozen=True, slots=True)
class Step:
    """One write of a conversation, applied whole or not at all.

    In order: check the `fence`, claim `event` (a claimed one makes the step a duplicate: nothing
    is written), open `opens` or find `session_id`, append `items`, set the active `agent`, the
    `status` and the `holder`, record `usage` for the model call whose reply is the first item,
    open `cases`, keep an approved call's `result`, mark the inbox message's `turn`, then queue
    `posts` in the thread's outbox (`key` names the thread when there is no session).
    """

    session_id: int | None = None
    opens: NewSession | None = None
    event: EventId | None = None
    items: tuple[Item, ...] = ()
    agent: str | None = None
    status: Status | None = None
    holder: Holder | None = None
    usage: ModelUsage | None = None
    cases: tuple[NewCase, ...] = ()
    result: tuple[int, CallResult] | None = None  # an approved call's result, for its case
    posts: tuple[dict[str, Any], ...] = ()
    turn: TurnMark | None = None
    key: SessionKey | None = None
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound message as the inbox keeps it until its turn is done.

    `stamp` orders a thread's messages as the platform stamped them (Slack's `ts`, a Discord
    snowflake), zero-padded so that text order is time order.
    """

    key: SessionKey
    author: str
    text: str
    mentioned: bool
    stamp: str
    event: EventId | None = None
    cut: bool = False  # the text was cut to the length limit


@dataclass(frozen=True, slots=True)
class InboxRow:
    """A stored inbound message still owed a turn (or whose turn was interrupted)."""

    id: int
    message: Inbound
    received_at: float
    session_id: int | None = None
    seq: int | None = None
    case_id: int | None = None  # not a message: the job of finishing this case's decided call


@dataclass(frozen=True, slots=True)
class Received:
    """What `receive` did: stored a new owed message, or found its event claimed before."""

    row: int | None  # the new inbox row; None for a duplicate or an ignored message
    duplicate: bool = False
    owed: bool = False  # a duplicate whose message is still waiting for its turn


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
    posts: tuple[dict[str, Any], ...] = ()
    resume: bool = False  # owe the thread the job of finishing the case's call
    fence: Fence | None = None


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
