"""`Store`: every store operation, written once, run by the driver of the chosen backend."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bot.store import ops_cases, ops_inbox, ops_leases, ops_outbox, ops_sessions
from bot.store import values as v
from bot.store.sql import Op
from bot.store.values import V

T = TypeVar("T")


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

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

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
        return await self._write(ops_sessions.commit(step, self.owner))

    async def recent(self, session_id: int, limit: int) -> list[v.Entry]:
        return await self._read(ops_sessions.recent(session_id, limit))

    async def first_user_entry(self, session_id: int) -> v.Entry | None:
        return await self._read(ops_sessions.first_user_entry(session_id))

    async def entries(self, session_id: int) -> list[v.Entry]:
        return await self._read(ops_sessions.entries(session_id))

    async def model_calls(self, session_id: int) -> list[v.ModelCallRecord]:
        return await self._read(ops_sessions.model_calls(session_id))

    # Inbox and events

    async def receive(self, message: v.Inbound, *, only_if_held: bool = False) -> v.Received:
        return await self._write(ops_inbox.receive(message, only_if_held))

    async def next_owed(self, key: v.SessionKey) -> v.InboxRow | None:
        return await self._read(ops_inbox.next_owed(key))

    async def owed_threads(self, platform: str, limit: int = 500) -> list[v.SessionKey]:
        return await self._read(ops_inbox.owed_threads(platform, limit))

    async def admit(
        self, message: v.InboxRow, fence: v.Fence | None, decide: Callable[[v.Session | None], V]
    ) -> v.Admitted[V]:
        return await self._write(ops_inbox.admit(message, fence, decide, self.owner))

    async def finish(self, message: v.InboxRow, fence: v.Fence | None) -> None:
        await self._write(ops_inbox.finish(message, fence))

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
        return await self._read(ops_outbox.pending(key))

    async def unsent(self, session_id: int) -> list[v.Outgoing]:
        return await self._read(ops_outbox.unsent(session_id))

    async def has_unsent(self, key: v.SessionKey) -> bool:
        return await self._read(ops_outbox.has_unsent(key))

    async def count_unsent(self) -> int:
        return await self._read(ops_outbox.count_unsent())

    async def due_threads(self, platform: str, now: float, limit: int = 500) -> list[v.SessionKey]:
        return await self._read(ops_outbox.due_threads(platform, now, limit))

    async def placeholder(self, turn: int) -> tuple[str, dict[str, Any]] | None:
        return await self._read(ops_outbox.placeholder(turn))

    async def mark_sent(self, post: v.Outgoing, ref: str | None, fence: v.Fence | None) -> None:
        await self._write(ops_outbox.mark_sent(post, ref, fence))

    async def mark_failed(
        self, post: v.Outgoing, error: str, retry_at: float, fence: v.Fence | None
    ) -> None:
        await self._write(ops_outbox.mark_failed(post, error, retry_at, fence))

    async def last_ref(self, key: v.SessionKey) -> str | None:
        return await self._read(ops_outbox.last_ref(key))

    async def mark_refused(self, post: v.Outgoing, error: str, fence: v.Fence | None) -> bool:
        return await self._write(ops_outbox.mark_refused(post, error, fence))

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
        return await self._write(ops_cases.decide(decision, self.owner))

    # Leases (a shared database only: one process on SQLite needs none)

    async def acquire(self, key: v.SessionKey, ttl: float) -> v.Fence | None:
        return await self._write(ops_leases.acquire(str(key), self.owner, ttl))

    async def renew(self, fence: v.Fence, ttl: float) -> bool:
        return await self._write(ops_leases.renew(fence, ttl))

    async def release(self, fence: v.Fence) -> None:
        await self._write(ops_leases.release(fence))

    async def _read(self, op: Op[T]) -> T:
        return await self.driver.read(op, _name(op))

    async def _write(self, op: Op[T]) -> T:
        return await self.driver.write(op, _name(op))


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


def _name(op: Any) -> str:
    """The operation's name, for error messages (`commit failed: ...`)."""
    return str(getattr(op, "__name__", "store operation"))
