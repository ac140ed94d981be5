"""`Store`: every store operation, written once, run by the driver of the chosen backend.

On a shared database (PostgreSQL) the store saves the transactions a turn would spend on its
thread's lease and on marking posts sent, without weakening either:

- The write that stores a thread's message also takes the thread's lease when it is free; the
  thread's worker, started at once, uses that lease instead of taking it in a transaction of its
  own.
- A post marked sent while it is the last one its thread's worker listed is marked in the
  thread's next write (checked against its fence) rather than in one of its own: before that
  worker lists the thread's posts again, or lets the lease go. So at most one post per thread is
  sent and not yet marked, and after a crash it is the first one listed, which delivery looks up
  on the platform before sending it again.
- A finished worker's lease is let go (with that last mark) in the next write of this process,
  whatever it is, or on its own within `let_go_s` (20 ms) when nothing else is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bot.store import ops_cases, ops_inbox, ops_leases, ops_outbox, ops_sessions
from bot.store import values as v
from bot.store.sql import Op
from bot.store.values import V

T = TypeVar("T")
log = logging.getLogger(__name__)
LET_GO_S = 0.02


class Driver(Protocol):
    """Runs operations on one backend: connection, dialect, transactions, migrations."""

    shared: bool  # several processes may use the database at once
    read_only: bool  # open what exists as it is: create, migrate and write nothing
    newest: int  # the schema version this program writes

    @property
    def where(self) -> str: ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read(self, op: Op[T], what: str) -> T: ...
    async def write(self, op: Op[T], what: str) -> T: ...
    async def schema_version(self) -> int: ...
    async def integrity(self) -> str | None: ...


class Store:
    """The `SessionStore` on any driver; the operations live in the `ops_*` modules.

    `owner` names this process (host, pid and a random part, so a restarted process with the
    same pid is another owner): leases are taken in its name and posts it queues carry it.
    """

    def __init__(self, driver: Driver, *, let_go_s: float = LET_GO_S) -> None:
        self.driver = driver
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.let_go_s = let_go_s
        self.leases = ops_leases.Ledger()
        self._timer: asyncio.TimerHandle | None = None
        self._letting_go: asyncio.Task[None] | None = None
        self._first: dict[int, v.Entry] = {}  # read with `recent`, for the turn that asks next

    @property
    def where(self) -> str:
        """Where the data lives, without credentials."""
        return self.driver.where

    @property
    def shared(self) -> bool:
        """Whether several processes may serve this database at once."""
        return self.driver.shared

    @property
    def read_only(self) -> bool:
        """Whether this store only reads: nothing is created, migrated or written."""
        return self.driver.read_only

    async def open(self) -> None:
        """Connect and migrate; read-only, connect and require this program's schema, changing
        nothing (`Unmigrated` when the bot has not set the database up yet). A failure leaves
        nothing open."""
        try:
            await self.driver.open()
            if self.driver.read_only:
                _require(await self.driver.schema_version(), self.driver.newest, self.where)
        except BaseException:
            await self.driver.close()
            raise

    async def close(self) -> None:
        """Let go of finished threads' leases, then close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._letting_go is not None:
            await self._letting_go
        if self.leases.done:
            with contextlib.suppress(v.StoreError):
                await self._write(_nothing(), everything=True)
        await self.driver.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def schema_version(self) -> int:
        return await self.driver.schema_version()

    # Conversations and history

    async def find_session(self, key: v.SessionKey) -> v.Session | None:
        return await self._read(ops_sessions.find_session(key))

    async def get_session(self, session_id: int) -> v.Session | None:
        return await self._read(ops_sessions.get_session(session_id))

    async def find_thread(self, thread: str, limit: int = 10) -> list[v.Session]:
        return await self._read(ops_sessions.find_thread(thread, limit))

    async def list_sessions(self, limit: int = 50) -> list[v.Session]:
        return await self._read(ops_sessions.list_sessions(limit))

    async def commit(self, step: v.Step) -> v.Session | None:
        return await self._write(ops_sessions.commit(step, self.owner), step.fence)

    async def recent(self, session_id: int, limit: int) -> list[v.Entry]:
        """The window, read with the first user message when it lies before it (one round trip
        for a turn that starts with no cached window)."""
        entries, first = await self._read(_window(session_id, limit), "recent")
        if first is not None:  # none yet may still come: only a found one is kept
            while len(self._first) >= 256:
                del self._first[next(iter(self._first))]
            self._first[session_id] = first
        return entries

    async def first_user_entry(self, session_id: int) -> v.Entry | None:
        if session_id in self._first:  # a transcript is append-only: it is still the first
            return self._first.pop(session_id)
        return await self._read(ops_sessions.first_user_entry(session_id))

    async def entries(self, session_id: int) -> list[v.Entry]:
        return await self._read(ops_sessions.entries(session_id))

    async def model_calls(self, session_id: int) -> list[v.ModelCallRecord]:
        return await self._read(ops_sessions.model_calls(session_id))

    # Inbox and events

    async def receive(self, message: v.Inbound, *, only_if_held: bool = False) -> v.Received:
        """Store the message; on a shared database, take its thread's lease too if it is free
        (see the module docstring), once a worker has said how long a lease lasts."""
        ttl = self.leases.ttl
        if not self.shared or ttl is None or self.leases.has(str(message.key)):
            return await self._write(ops_inbox.receive(message, only_if_held))
        asked = time.monotonic()
        received, fence = await self.driver.write(  # carries nothing: it must never wait
            _receiving(message, only_if_held, self.owner, ttl), "receive"
        )
        if fence is not None:
            self.leases.hold(fence, asked, ttl, "taken")
        return received

    async def next_owed(self, key: v.SessionKey) -> v.InboxRow | None:
        return await self._read(ops_inbox.next_owed(key))

    async def owed_threads(self, platform: str, limit: int = 500) -> list[v.SessionKey]:
        return await self._read(ops_inbox.owed_threads(platform, limit))

    async def admit(
        self, message: v.InboxRow, fence: v.Fence | None, decide: Callable[[v.Session | None], V]
    ) -> v.Admitted[V]:
        return await self._write(ops_inbox.admit(message, fence, decide, self.owner), fence)

    async def finish(self, message: v.InboxRow, fence: v.Fence | None) -> None:
        await self._write(ops_inbox.finish(message, fence), fence)

    async def last_stamps(
        self, platform: str, since: float, limit: int = 200
    ) -> list[tuple[v.SessionKey, str]]:
        return await self._read(ops_inbox.last_stamps(platform, since, limit))

    async def claim_event(self, event: v.EventId) -> bool:
        return await self._write(ops_sessions.claim_event(event, None))

    async def seen_event(self, event: v.EventId) -> bool:
        return await self._read(ops_sessions.seen_event(event))

    # Outbox

    async def pending(self, key: v.SessionKey) -> list[v.Outgoing]:
        """The thread's unsent posts; a post whose sent mark is still owed is not among them
        (if others are, the mark is written first and the list read again)."""
        name = str(key)
        posts = await self._read(ops_outbox.pending(key))
        lease = self.leases.held.get(name)
        if lease is not None and lease.marks:
            marked = {post.id for post, _ in lease.marks}
            if all(post.id in marked for post in posts):
                posts = []
            else:
                posts = await self._write(ops_outbox.pending(key), thread=name)
        if lease is not None:
            lease.listed = posts[-1].id if posts else None
        return posts

    async def unsent(self, session_id: int) -> list[v.Outgoing]:
        owed = self.leases.owing(session_id=session_id)
        return await self._look(ops_outbox.unsent(session_id), owed)

    async def has_unsent(self, key: v.SessionKey) -> bool:
        return await self._look(ops_outbox.has_unsent(key), str(key))

    async def count_unsent(self) -> int:
        return await self._read(ops_outbox.count_unsent())

    async def due_threads(self, platform: str, now: float, limit: int = 500) -> list[v.SessionKey]:
        return await self._read(ops_outbox.due_threads(platform, now, limit))

    async def placeholder(self, turn: int) -> tuple[str, dict[str, Any]] | None:
        return await self._look(ops_outbox.placeholder(turn), self.leases.owing(turn=turn))

    async def mark_sent(self, post: v.Outgoing, ref: str | None, fence: v.Fence | None) -> None:
        """Mark the post sent: now, or, on a shared database, with the thread's next write when
        it is the last post its worker listed (see the module docstring)."""
        if not self.leases.defer(post, ref, fence):
            await self._write(ops_outbox.mark_sent(post, ref, fence), fence)

    async def mark_failed(
        self, post: v.Outgoing, error: str, retry_at: float, fence: v.Fence | None
    ) -> None:
        await self._write(ops_outbox.mark_failed(post, error, retry_at, fence), fence)

    async def last_ref(self, key: v.SessionKey) -> str | None:
        return await self._look(ops_outbox.last_ref(key), str(key))

    async def mark_refused(self, post: v.Outgoing, error: str, fence: v.Fence | None) -> bool:
        return await self._write(ops_outbox.mark_refused(post, error, fence), fence)

    async def dead_letters(self, limit: int = 100) -> list[v.DeadLetter]:
        return await self._read(ops_outbox.dead_letters(limit))

    async def count_dead(self) -> int:
        return await self._read(ops_outbox.count_dead())

    async def integrity(self) -> str | None:
        """The database's own consistency check ("ok", or what is damaged); None where the
        backend has none to offer (PostgreSQL)."""
        return await self.driver.integrity()

    async def prune(self, before: float) -> int:
        """Forget what is done and older than `before` (sent posts, answered messages, claims,
        unused leases); how many rows."""
        removed = await self._write(ops_outbox.prune(before))
        if self.shared:
            await self._write(ops_leases.prune(before))
        return removed

    # Cases

    async def get_case(self, case_id: int) -> v.Case | None:
        return await self._read(ops_cases.get_case(case_id))

    async def cases(
        self,
        *,
        session_id: int | None = None,
        status: v.CaseStatus | None = None,
        limit: int = 100,
    ) -> list[v.Case]:
        return await self._read(ops_cases.cases(session_id, status, limit))

    async def count_cases(self, status: v.CaseStatus) -> int:
        return await self._read(ops_cases.count_cases(status))

    async def case_actions(self, case_id: int) -> list[v.CaseAction]:
        return await self._read(ops_cases.case_actions(case_id))

    async def set_case_card(self, case_id: int, card: str) -> None:
        await self._write(ops_cases.set_card(case_id, card))

    async def decide(self, decision: v.Decision) -> v.Case | None:
        return await self._write(ops_cases.decide(decision, self.owner), decision.fence)

    # Leases (a shared database only: one process on SQLite needs none)

    async def acquire(self, key: v.SessionKey, ttl: float) -> v.Fence | None:
        """The thread's lease: the one its message's write took, while most of it is left,
        else taken now; None while another process holds it."""
        name = str(key)
        fence = self.leases.reuse(name, ttl)
        if fence is not None:
            return fence
        asked = time.monotonic()
        fence = await self._write(ops_leases.acquire(name, self.owner, ttl), thread=name)
        if fence is not None:
            self.leases.hold(fence, asked, ttl)
        return fence

    async def renew(self, fence: v.Fence, ttl: float) -> bool:
        asked = time.monotonic()
        renewed = await self._write(ops_leases.renew(fence, ttl))
        if renewed:
            self.leases.renewed(fence, asked)
        return renewed

    async def release(self, fence: v.Fence) -> None:
        """Let the lease go, with the thread's owed mark, in this process's next write or
        within `let_go_s` (a new worker of the thread may take it back before that)."""
        self.leases.let_go(fence)
        if self._timer is None and self._letting_go is None:
            self._timer = asyncio.get_running_loop().call_later(self.let_go_s, self._let_go)

    def _let_go(self) -> None:
        self._timer = None
        if self.leases.done:
            self._letting_go = asyncio.create_task(self._let_go_now())

    async def _let_go_now(self) -> None:
        try:
            await self._write(_nothing(), everything=True)
        except v.StoreError as exc:
            log.warning("letting finished threads' leases go failed (%s); trying again", exc)
        finally:
            self._letting_go = None
        if self.leases.done and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(1.0, self._let_go)

    async def _read(self, op: Op[T], name: str | None = None) -> T:
        return await self.driver.read(op, name or _name(op))

    async def _look(self, op: Op[T], thread: str | None) -> T:
        """A read that must see the thread's owed marks: written first, if there are any."""
        if thread is not None and self.leases.owes(thread):
            return await self._write(op, thread=thread)
        return await self._read(op)

    async def _write(
        self,
        op: Op[T],
        fence: v.Fence | None = None,
        *,
        thread: str | None = None,
        name: str | None = None,
        everything: bool = False,
    ) -> T:
        """Run a write; what this process owes the database rides along in its transaction
        (see `Ledger.riders`). If the write fails, it is owed still."""
        what = name or _name(op)
        thread = thread or (fence.key if fence is not None else None)
        if not self.shared:
            return await self.driver.write(op, what)
        marked, going = self.leases.riders(thread, everything or fence is not None)
        if not marked and not going:
            return await self.driver.write(op, what)
        try:
            return await self.driver.write(_along(marked, going, op, fence), what)
        except BaseException:
            self.leases.restore(marked, going)
            raise


def _require(version: int, newest: int, where: str) -> None:
    """A read-only store reads only a database at this program's schema: the bot migrates an
    older one at start-up, and a newer one belongs to a newer Switchboard."""
    if version == 0:
        raise v.Unmigrated(
            f"no Switchboard tables in {where} yet; the bot creates them at start-up", 0, newest
        )
    if version < newest:
        raise v.Unmigrated(
            f"{where}: schema {version} of {newest} (not migrated yet: the bot migrates at "
            "start-up)",
            version,
            newest,
        )
    if version > newest:
        raise v.StoreError(
            f"the database {where} has schema version {version}, newer than this program's "
            f"{newest}; upgrade Switchboard"
        )


def _along(
    marked: list[ops_leases.Lease],
    going: list[ops_leases.Lease],
    op: Op[T],
    fence: v.Fence | None,
) -> Op[T]:
    """Owed marks (each lease checked first: a lost one skips them), leases let go, and `op`;
    the marks of `op`'s own fence after it, which checked that fence already."""
    after = [lease for lease in marked if fence is not None and lease.fence == fence]
    for lease in (*(lease for lease in marked if lease not in after), *going):
        if lease.marks and (yield from ops_leases.holds(lease.fence)):
            yield from _marks(lease)
    for lease in going:
        yield from ops_leases.release(lease.fence)
    result = yield from op
    for lease in after:
        yield from _marks(lease)
    return result


def _marks(lease: ops_leases.Lease) -> Op[None]:
    for post, ref in lease.marks:
        yield from ops_outbox.mark_sent(post, ref, None)


def _nothing() -> Op[None]:
    """A write of only what rides along."""
    return
    yield


def _receiving(
    message: v.Inbound, only_if_held: bool, owner: str, ttl: float
) -> Op[tuple[v.Received, v.Fence | None]]:
    """Store the message, and take its thread's lease if it is free."""
    received = yield from ops_inbox.receive(message, only_if_held)
    if received.row is None:
        return received, None
    return received, (yield from ops_leases.take(str(message.key), owner, ttl))


def _window(session_id: int, limit: int) -> Op[tuple[list[v.Entry], v.Entry | None]]:
    """The last `limit` entries, and the first user message when it is older than those."""
    entries = yield from ops_sessions.recent(session_id, limit)
    if not entries or entries[0].seq == 1:
        return entries, None
    return entries, (yield from ops_sessions.first_user_entry(session_id))


def _name(op: Any) -> str:
    """The operation's name, for error messages (`commit failed: ...`)."""
    return str(getattr(op, "__name__", "store operation"))
