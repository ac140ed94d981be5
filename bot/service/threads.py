"""Thread work: one worker per thread at a time, under the thread's lease.

A thread is "kicked" when something is owed to it (a stored message, a post to deliver); its
worker then runs, in this process alone, until nothing is left. On a shared database the worker
first takes the thread's lease, renews it while it runs, and stops when the lease is lost: its
fence makes every later write fail anyway. A sweep kicks every thread with work left over (after a
crash, a restart, a failed post coming due, or another process that died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from bot.service.lanes import Lanes
from bot.store.protocols import Inbox, Leases, Outbox
from bot.store.values import Fence, LeaseLost, SessionKey, StoreError

log = logging.getLogger(__name__)

Work = Callable[[SessionKey, Fence | None], Awaitable[None]]


class ThreadStore(Inbox, Outbox, Leases, Protocol):
    """The parts of the store thread work uses."""


class Threads:
    """Runs `work(key, fence)` for each thread that is kicked, one worker per thread."""

    def __init__(
        self,
        store: ThreadStore,
        work: Work,
        *,
        lease_s: float = 15.0,
        poll_s: float = 0.05,
    ) -> None:
        self.store = store
        self.lanes = Lanes()
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._work = work
        self._running: dict[SessionKey, asyncio.Task[None]] = {}
        self._again: set[SessionKey] = set()
        self.stopping = False

    def kick(self, key: SessionKey) -> None:
        """Make sure the thread's worker runs (again, if it is running now)."""
        if self.stopping:
            return
        if key in self._running:
            self._again.add(key)
            return
        self._running[key] = asyncio.create_task(self._worker(key), name=f"thread {key}")

    async def sweep(self, platform: str, now: float) -> int:
        """Kick every thread of `platform` with messages owed or posts due; how many."""
        keys = set(await self.store.owed_threads(platform))
        keys.update(await self.store.due_threads(platform, now))
        for key in keys:
            self.kick(key)
        return len(keys)

    async def settled(self) -> None:
        """Wait until no thread has a worker (tests, scripts)."""
        while self._running:
            await asyncio.wait(set(self._running.values()))

    async def idle(self, key: SessionKey) -> None:
        """Wait until the thread's worker (if any) has finished."""
        while (task := self._running.get(key)) is not None:
            await asyncio.wait({task})

    async def drain(self, within: float) -> bool:
        """Stop taking work and wait for the workers; False if `within` seconds ran out."""
        self.stopping = True
        tasks = set(self._running.values())
        if not tasks:
            return True
        _, late = await asyncio.wait(tasks, timeout=within)
        return not late

    @property
    def busy(self) -> int:
        """How many threads have a worker now."""
        return len(self._running)

    @contextlib.asynccontextmanager
    async def hold(self, key: SessionKey) -> AsyncIterator[Fence | None]:
        """The thread, exclusively: its lane in this process, and its lease on a shared
        database (waited for, then renewed until released); yields the lease's fence."""
        async with self.lanes.hold(key):
            if not self.store.shared:
                yield None
                return
            fence = await self._acquire(key)
            renewing = asyncio.create_task(self._renew(fence, asyncio.current_task()))
            try:
                yield fence
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
                with contextlib.suppress(StoreError):
                    await self.store.release(fence)

    async def _worker(self, key: SessionKey) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    async with self.hold(key) as fence:
                        await self._work(key, fence)
                except LeaseLost as exc:
                    log.warning("thread %s: %s; another process goes on with it", key, exc)
                    return
                except asyncio.CancelledError:
                    if self.stopping:
                        raise
                    log.warning("thread %s: the lease was lost; another process goes on", key)
                    return
                except Exception:
                    log.exception("thread %s: work failed; the next sweep retries it", key)
                    return
                if key not in self._again or self.stopping:
                    return
        finally:
            self._running.pop(key, None)
            self._again.discard(key)

    async def _acquire(self, key: SessionKey) -> Fence:
        delay = 0.005
        waited = time.monotonic()
        while (fence := await self.store.acquire(key, self.lease_s)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_s * 4)
        if time.monotonic() - waited > 1.0:
            log.info("thread %s: lease taken after %.1fs", key, time.monotonic() - waited)
        return fence

    async def _renew(self, fence: Fence, holder: asyncio.Task[object] | None) -> None:
        """Renew the lease a few times per period; stop its holder when it is lost, or when no
        renewal got through for most of a period (another process may take it over soon)."""
        margin = self.lease_s * 0.8  # past this without a renewal, the work stops
        renewed = time.monotonic()
        pause = self.lease_s / 3
        while True:
            await asyncio.sleep(pause)
            asked = time.monotonic()
            try:
                async with asyncio.timeout(max(0.05, renewed + margin - asked)):
                    held = await self.store.renew(fence, self.lease_s)
            except (StoreError, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
                if time.monotonic() - renewed < margin:
                    log.warning("lease %s: renewing failed (%s); trying again", fence.key, why)
                    pause = self.lease_s / 10
                    continue
                log.warning("lease %s: not renewed in time (%s); stopping its work", fence.key, why)
            else:
                if held:
                    renewed, pause = asked, self.lease_s / 3
                    continue
                log.warning("lease %s: lost to another process; stopping its work", fence.key)
            if holder is not None:
                holder.cancel()
            return
