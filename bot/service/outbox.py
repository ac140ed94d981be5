"""The outbox worker: delivers queued posts that could not be sent, in order, with backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.service.conversation import ConversationService
from bot.service.messages import Post, post_from_dict
from bot.store.base import SessionKey

log = logging.getLogger(__name__)

Deliver = Callable[[SessionKey, Post], Awaitable[None]]


class OutboxWorker:
    """Retries undelivered posts thread by thread, oldest first, until each thread is drained."""

    def __init__(
        self,
        service: ConversationService,
        deliver: Deliver,
        *,
        interval: float = 1.0,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        self.service = service
        self.deliver = deliver
        self.interval = interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        service.retry_delay = backoff

    async def run_once(self) -> int:
        """One pass over every thread with a due post; returns how many posts were delivered."""
        now = time.time()
        due = await self.service.store.due(now, limit=500)
        threads = {post.session_id: post.key for post in due}
        delivered = 0
        for session_id, key in threads.items():
            delivered += await self._drain(session_id, key, now)
        return delivered

    async def run(self) -> None:
        """Pass after pass until cancelled (the first pass sends what a crash left behind)."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("outbox pass failed")
            await asyncio.sleep(self.interval)

    async def _drain(self, session_id: int, key: SessionKey, now: float) -> int:
        store = self.service.store
        async with self.service.lanes.hold(key), store.thread_lock(key):
            delivered = 0
            for queued in await store.unsent(session_id):
                if queued.next_attempt_at > now:
                    break  # backing off: later posts wait behind it
                try:
                    await self.deliver(key, post_from_dict(queued.body))
                except Exception as exc:
                    await store.mark_sent(session_id, delivered)
                    delay = min(self.backoff * 2**queued.attempts, self.max_backoff)
                    await store.mark_failed(session_id, f"{type(exc).__name__}: {exc}", now + delay)
                    log.warning(
                        "session %s: redelivery failed (%s); next try in %.0fs",
                        key,
                        type(exc).__name__,
                        delay,
                    )
                    return delivered
                delivered += 1
            await store.mark_sent(session_id, delivered)
            if not await store.unsent(session_id):
                self.service.backlog.discard(session_id)
            if delivered:
                log.info("session %s: outbox delivered %d post(s)", key, delivered)
            return delivered
