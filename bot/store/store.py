"""`Store`: every store operation, written once, run by the driver of the chosen backend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from bot.store import ops_cases, ops_leases, ops_outbox, ops_sessions
from bot.store import values as v
from bot.store.sql import Op
from bot.store.values import V

T = TypeVar("T")
_NOTHING: AbstractAsyncContextManager[None] = contextlib.nullcontext()


class Driver(Protocol):
    """Runs operations on one backend: connection, dialect, transactions, migrations."""

    shared: bool  # several processes may use the database at once

    @property
    def where(self) -> str: ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read(self, op: Op[T], what: str) -> T: ...
    async def write(self, op: Op[T], what: str) -> T: ...
    async def schema_version(self) -> int: ...


class Store:
    """The `SessionStore` on any driver; the operations live in the `ops_*` modules."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def where(self) -> str:
        """Where the data lives, without credentials."""
        return self.driver.where

    async def open(self) -> None:
        """Connect and migrate; a failure leaves nothing open."""
        try:
            await self.driver.open()
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

    async def admit(
        self, key: v.SessionKey, event: v.EventId | None, decide: Callable[[v.Session | None], V]
    ) -> v.Admitted[V] | None:
        return await self._write(ops_sessions.admit(key, event, decide))

    async def commit(self, step: v.Step) -> v.Session | None:
        return await self._write(ops_sessions.commit(step))

    async def recent(self, session_id: int, limit: int) -> list[v.Entry]:
        return await self._read(ops_sessions.recent(session_id, limit))

    async def first_user_entry(self, session_id: int) -> v.Entry | None:
        return await self._read(ops_sessions.first_user_entry(session_id))

    async def entries(self, session_id: int) -> list[v.Entry]:
        return await self._read(ops_sessions.entries(session_id))

    async def model_calls(self, session_id: int) -> list[v.ModelCallRecord]:
        return await self._read(ops_sessions.model_calls(session_id))

    # Events

    async def claim_event(self, event: v.EventId) -> bool:
        return await self._write(ops_sessions.claim_event(event, None))

    async def seen_event(self, event: v.EventId) -> bool:
        return await self._read(ops_sessions.seen_event(event))

    # Outbox

    async def unsent(self, session_id: int) -> list[v.Outgoing]:
        return await self._read(ops_outbox.unsent(session_id))

    async def has_unsent(self, session_id: int) -> bool:
        return await self._read(ops_outbox.has_unsent(session_id))

    async def due(self, now: float, limit: int = 100) -> list[v.Outgoing]:
        return await self._read(ops_outbox.due(now, limit))

    async def mark_sent(self, session_id: int, number: int) -> None:
        if number:
            await self._write(ops_outbox.mark_sent(session_id, number))

    async def mark_failed(self, session_id: int, error: str, retry_at: float) -> None:
        await self._write(ops_outbox.mark_failed(session_id, error, retry_at))

    # Cases

    async def get_case(self, case_id: int) -> v.Case | None:
        return await self._read(ops_cases.get_case(case_id))

    async def cases(
        self, *, session_id: int | None = None, status: v.CaseStatus | None = None, limit: int = 100
    ) -> list[v.Case]:
        return await self._read(ops_cases.cases(session_id, status, limit))

    async def case_actions(self, case_id: int) -> list[v.CaseAction]:
        return await self._read(ops_cases.case_actions(case_id))

    async def set_case_card(self, case_id: int, card: str) -> None:
        await self._write(ops_cases.set_card(case_id, card))

    async def decide(self, decision: v.Decision) -> v.Case | None:
        return await self._write(ops_cases.decide(decision))

    # Leases

    def thread_lock(self, key: v.SessionKey) -> AbstractAsyncContextManager[None]:
        """On a shared database, hold the thread's lease for the turn; a single process's lanes
        already order each thread, so there it is nothing at all."""
        return self._lease(key) if self.driver.shared else _NOTHING

    @contextlib.asynccontextmanager
    async def _lease(self, key: v.SessionKey) -> AsyncIterator[None]:
        """Take the thread's lease (polling while another process has it), drop it after."""
        name, delay = str(key), 0.005
        while not await self._write(ops_leases.take_lease(name, self.owner)):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await self._write(ops_leases.drop_lease(name, self.owner))

    async def _read(self, op: Op[T]) -> T:
        return await self.driver.read(op, _name(op))

    async def _write(self, op: Op[T]) -> T:
        return await self.driver.write(op, _name(op))


def _name(op: Any) -> str:
    """The operation's name, for error messages (`commit failed: ...`)."""
    return str(getattr(op, "__name__", "store operation"))
