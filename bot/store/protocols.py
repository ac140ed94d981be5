"""What the rest of the bot may ask of the store, by concern: small protocols, no flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bot.store.values import (
    Admitted,
    Case,
    CaseAction,
    CaseStatus,
    DeadLetter,
    Decision,
    Entry,
    EventId,
    Fence,
    Inbound,
    InboxRow,
    ModelCallRecord,
    Outgoing,
    Received,
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


class Inbox(Protocol):
    """Inbound messages: stored before they are acknowledged, owed a turn until answered."""

    async def receive(self, message: Inbound, *, only_if_held: bool = False) -> Received:
        """Claim the message's event and store the message, owed a turn (see `ops_inbox`)."""
        ...

    async def next_owed(self, key: SessionKey) -> InboxRow | None:
        """The thread's owed message that the platform stamped first."""
        ...

    async def owed_threads(self, platform: str, limit: int = 500) -> list[SessionKey]:
        """Threads of a platform with messages owed a turn."""
        ...

    async def admit(
        self, message: InboxRow, fence: Fence | None, decide: Callable[[Session | None], V]
    ) -> Admitted[V]:
        """Read the thread's session, let `decide` say what the message's step is, write it:
        one transaction. `decide` runs inside it, so it must be a quick pure function."""
        ...

    async def finish(self, message: InboxRow, fence: Fence | None) -> None:
        """Mark a message answered when its turn's last step stored nothing else."""
        ...

    async def last_stamps(
        self, platform: str, since: float, limit: int = 200
    ) -> list[tuple[SessionKey, str]]:
        """Open conversations active since `since`, with the newest stamp stored for each."""
        ...

    async def claim_event(self, event: EventId) -> bool:
        """Claim an event that stores nothing else (a click); False if claimed before."""
        ...

    async def seen_event(self, event: EventId) -> bool:
        """Whether an event was claimed."""
        ...


class Outbox(Protocol):
    """Posts owed to threads, sent in order, each marked as soon as the platform accepts it."""

    async def pending(self, key: SessionKey) -> list[Outgoing]:
        """The thread's unsent posts, oldest first."""
        ...

    async def unsent(self, session_id: int) -> list[Outgoing]:
        """A session's unsent posts, oldest first."""
        ...

    async def has_unsent(self, key: SessionKey) -> bool:
        """Whether the thread has a post not yet sent."""
        ...

    async def count_unsent(self) -> int:
        """How many posts wait in the outbox, all threads together."""
        ...

    async def due_threads(self, platform: str, now: float, limit: int = 500) -> list[SessionKey]:
        """Threads of a platform with a post whose next attempt is due."""
        ...

    async def placeholder(self, turn: int) -> tuple[str, dict[str, Any]] | None:
        """The turn's live placeholder (shown, not replaced yet): its reference and its post."""
        ...

    async def mark_sent(self, post: Outgoing, ref: str | None, fence: Fence | None) -> None:
        """The platform accepted the post; `ref` names what it created."""
        ...

    async def mark_failed(
        self, post: Outgoing, error: str, retry_at: float, fence: Fence | None
    ) -> None:
        """A delivery failed: count it, and when to try again."""
        ...

    async def last_ref(self, key: SessionKey) -> str | None:
        """The platform reference of the thread's newest post marked sent."""
        ...

    async def mark_refused(self, post: Outgoing, error: str, fence: Fence | None) -> bool:
        """The platform refused the post for good: once more as plain text, then a dead letter
        (True when it became one)."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Posts set aside, newest first."""
        ...

    async def count_dead(self) -> int:
        """How many posts were set aside."""
        ...

    async def prune(self, before: float) -> int:
        """Forget what is done and older than `before`; how many rows."""
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
    """A thread's turns run in one process at a time: a lease, on a shared database."""

    @property
    def shared(self) -> bool:
        """Whether several processes may serve the database (else: no leases needed)."""
        ...

    async def acquire(self, key: SessionKey, ttl: float) -> Fence | None:
        """Take the thread's lease for `ttl` seconds; None while another process holds it."""
        ...

    async def renew(self, fence: Fence, ttl: float) -> bool:
        """Extend the lease; False if another process took it meanwhile."""
        ...

    async def release(self, fence: Fence) -> None:
        """Let the lease go."""
        ...


class SessionStore(Conversations, History, Inbox, Outbox, Cases, Leases, Protocol):
    """Everything above, on one database."""

    @property
    def where(self) -> str:
        """Where the data lives, without credentials."""
        ...

    @property
    def owner(self) -> str:
        """This process, as it names itself in leases and in the posts it queues."""
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
