"""What the rest of the bot may ask of the store, by concern: small protocols, no flags."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from bot.store.values import (
    Admitted,
    Case,
    CaseAction,
    CaseStatus,
    Decision,
    Entry,
    EventId,
    ModelCallRecord,
    Outgoing,
    Session,
    SessionKey,
    Step,
    V,
)


class Conversations(Protocol):
    """Sessions and their append-only transcript; every change is one `Step`."""

    async def find_session(self, key: SessionKey) -> Session | None:
        """The latest session of a thread, open or closed."""
        ...

    async def get_session(self, session_id: int) -> Session | None:
        """A session by id."""
        ...

    async def admit(
        self, key: SessionKey, event: EventId | None, decide: Callable[[Session | None], V]
    ) -> Admitted[V] | None:
        """Read the thread's session, let `decide` say what to write, write it: one transaction;
        None, writing nothing, when `event` was claimed before (a duplicate).

        `decide` runs inside the transaction, so it must be a quick pure function."""
        ...

    async def commit(self, step: Step) -> Session | None:
        """Apply a step whole; None, changing nothing, when its event was claimed before."""
        ...

    async def recent(self, session_id: int, limit: int) -> list[Entry]:
        """The last `limit` transcript entries, oldest first."""
        ...

    async def first_user_entry(self, session_id: int) -> Entry | None:
        """The conversation's first user message."""
        ...


class History(Protocol):
    """Reading stored conversations whole, for commands and exports (never on the turn path)."""

    async def find_thread(self, thread: str, limit: int = 10) -> list[Session]:
        """Sessions of a thread name on any platform or channel, newest first."""
        ...

    async def list_sessions(self, limit: int = 50) -> list[Session]:
        """Sessions, most recently updated first."""
        ...

    async def entries(self, session_id: int) -> list[Entry]:
        """The whole transcript."""
        ...

    async def model_calls(self, session_id: int) -> list[ModelCallRecord]:
        """Every model call of a session, in order."""
        ...


class Events(Protocol):
    """Inbound platform events, claimed once."""

    async def claim_event(self, event: EventId) -> bool:
        """Claim an event that stores nothing else; False if it was claimed before."""
        ...

    async def seen_event(self, event: EventId) -> bool:
        """Whether an event was claimed."""
        ...


class Outbox(Protocol):
    """Posts owed to threads, delivered in order."""

    async def unsent(self, session_id: int) -> list[Outgoing]:
        """The session's posts not yet delivered, oldest first."""
        ...

    async def has_unsent(self, session_id: int) -> bool:
        """Whether the session has a post not yet delivered."""
        ...

    async def due(self, now: float, limit: int = 100) -> list[Outgoing]:
        """Undelivered posts whose next attempt is due, oldest first."""
        ...

    async def mark_sent(self, session_id: int, number: int) -> None:
        """Record delivery of the session's `number` oldest unsent posts."""
        ...

    async def mark_failed(self, session_id: int, error: str, retry_at: float) -> None:
        """Record a failed delivery of the session's oldest unsent post, and when to retry."""
        ...


class Cases(Protocol):
    """Review cases and moderators' decisions on them."""

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

    async def decide(self, decision: Decision) -> Case | None:
        """Apply a decision whole; None, changing nothing, when the case moved on."""
        ...


class Leases(Protocol):
    """A thread's turns run in one process at a time."""

    def thread_lock(self, key: SessionKey) -> AbstractAsyncContextManager[None]:
        """Hold the thread while a turn runs (a no-op for a single process)."""
        ...


class SessionStore(Conversations, History, Events, Outbox, Cases, Leases, Protocol):
    """Everything above, on one database."""

    @property
    def where(self) -> str:
        """Where the data lives, without credentials."""
        ...

    async def open(self) -> None:
        """Connect and migrate the schema."""
        ...

    async def close(self) -> None:
        """Close (safe to call twice)."""
        ...

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        ...
