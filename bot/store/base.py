"""The `SessionStore` protocol and the values it deals in."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.engine.transcript import Item

Status = Literal["open", "closed"]


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


CaseStatus = Literal["open", "approved", "rejected", "closed"]


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
class Received:
    """What became of an inbound message: stored in `session`, a duplicate, or ignored."""

    session: Session | None
    outcome: Literal["stored", "duplicate", "ignored"]
    backlog: bool = False  # the thread has posts still waiting in the outbox


class SessionStore(Protocol):
    """Durable sessions: one open session per thread, an append-only transcript, event dedupe."""

    async def open(self) -> None:
        """Connect and migrate the schema."""
        ...

    def thread_lock(self, key: SessionKey) -> AbstractAsyncContextManager[None]:
        """Hold a thread across processes while a turn runs (a no-op for a single process)."""
        ...

    async def close(self) -> None:
        """Flush and close."""
        ...

    async def __aenter__(self) -> SessionStore:
        """Open, for `async with`."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Close, for `async with`."""
        ...

    async def find_session(self, key: SessionKey) -> Session | None:
        """The latest session of a thread, open or closed."""
        ...

    async def get_session(self, session_id: int) -> Session | None:
        """A session by id."""
        ...

    async def find_thread(self, thread: str) -> Session | None:
        """The latest session of a thread name on any platform or channel (for the CLI)."""
        ...

    async def open_session(self, key: SessionKey, workflow: str, agent: str) -> Session:
        """Start a new conversation in a thread (any open one there must be closed first)."""
        ...

    async def receive(
        self,
        key: SessionKey,
        item: Item,
        *,
        event: tuple[str, str] | None,
        workflow: str,
        start_agent: str,
        may_open: bool,
    ) -> Received:
        """Atomically store a user's message in the thread's open session.

        A message from the moderator who took the thread over is stored as theirs
        (`ModeratorMessage`). A claimed `event` is a duplicate. With no open session, one is
        opened when `may_open` (the bot was addressed); otherwise the message is ignored and
        nothing is written.
        """
        ...

    async def append(
        self,
        session_id: int,
        items: Sequence[Item],
        *,
        active_agent: str | None = None,
        status: Status | None = None,
        event: tuple[str, str] | None = None,
        usage: ModelUsage | None = None,
        open_case: tuple[str, str | None] | None = None,
        posts: Sequence[dict[str, Any]] = (),
        delivered: int = 0,
    ) -> Session | None:
        """Atomically: claim `event` (platform, id), append items, update agent and status,
        record `usage` for the model call whose reply is the first item, open a case
        `(review agent, reason)`, mark the session's `delivered` oldest unsent posts as sent,
        then queue `posts` in the outbox.

        Returns None, changing nothing, when the event was already claimed.
        """
        ...

    async def unsent(self, session_id: int) -> list[Outgoing]:
        """The session's posts not yet delivered, oldest first."""
        ...

    async def due(self, now: float, limit: int = 100) -> list[Outgoing]:
        """Undelivered posts whose next attempt is due, oldest first."""
        ...

    async def mark_sent(self, session_id: int, count: int) -> None:
        """Record delivery of the session's `count` oldest unsent posts."""
        ...

    async def mark_failed(self, session_id: int, error: str, retry_at: float) -> None:
        """Record a failed delivery of the session's oldest unsent post, and when to retry."""
        ...

    async def seen_event(self, platform: str, event_id: str) -> bool:
        """Whether an inbound event id was already claimed."""
        ...

    async def claim_event(self, platform: str, event_id: str) -> bool:
        """Claim an event that stores nothing else (an empty message); False if claimed before."""
        ...

    async def recent(self, session_id: int, limit: int) -> list[Entry]:
        """The last `limit` transcript entries, oldest first."""
        ...

    async def first_user_entry(self, session_id: int) -> Entry | None:
        """The conversation's first user message."""
        ...

    async def entries(self, session_id: int) -> list[Entry]:
        """The whole transcript (for export; never on the turn path)."""
        ...

    async def list_sessions(self, limit: int = 50) -> list[Session]:
        """Sessions, most recently updated first."""
        ...

    async def model_calls(self, session_id: int) -> list[ModelCallRecord]:
        """Every model call of a session, in order (for export)."""
        ...

    async def get_case(self, case_id: int) -> Case | None:
        """A case by id."""
        ...

    async def cases(
        self, *, session_id: int | None = None, status: CaseStatus | None = None, limit: int = 100
    ) -> list[Case]:
        """Cases, newest first, optionally of one session or in one status."""
        ...

    async def case_actions(self, case_id: int) -> list[CaseAction]:
        """Every recorded action on a case, in order."""
        ...

    async def set_case_card(self, case_id: int, card: str) -> None:
        """Remember where the case's card was posted (a platform reference)."""
        ...

    async def moderate(
        self,
        case_id: int,
        action: str,
        actor: str,
        *,
        expect: tuple[CaseStatus, ...],
        status: CaseStatus | None = None,
        taken_over_by: str | Literal[False] | None = False,
        items: Sequence[Item] = (),
        active_agent: str | None = None,
        session_status: Status | None = None,
    ) -> Case | None:
        """Atomically apply a moderator action, only if the case's status is in `expect`.

        Records the action, sets the case `status`, the session's `taken_over_by` (False leaves
        it), appends `items`, and updates the session. None, changing nothing, when refused.
        """
        ...
