"""Posting: a turn's posts go out as they happen, or wait in the outbox, in order.

`Poster` owns what delivery shares between turns: the platform, the threads whose posts are
queued behind a failure (`backlog`), and the retry policy. `Delivery` is one turn's view of it.
The outbox pass delivers what is queued, thread by thread, oldest first, with backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from bot.service.lanes import Lanes
from bot.service.messages import Post, post_from_dict
from bot.service.platform import Platform
from bot.store.protocols import Leases, Outbox
from bot.store.values import SessionKey

log = logging.getLogger(__name__)


class PosterStore(Outbox, Leases, Protocol):
    """The parts of the store posting uses."""


@dataclass(eq=False)
class Poster:
    """Delivers posts to one platform, now or later from the outbox, in each thread's order."""

    platform: Platform | None
    store: PosterStore
    lanes: Lanes
    backoff: float = 1.0
    max_backoff: float = 300.0
    _backlog: set[int] = field(default_factory=set)  # sessions whose posts wait for a pass

    def delivery(self, session_id: int, key: SessionKey, placeholder: str | None) -> Delivery:
        """One turn's posting; `placeholder` is replaced by the turn's first post."""
        return Delivery(self, session_id, key, placeholder)

    def queued_behind(self, session_id: int, backlog: bool) -> None:
        """Note that the session has posts waiting (left by a failure or another process)."""
        if backlog:
            self._backlog.add(session_id)

    def blocked(self, session_id: int) -> bool:
        return session_id in self._backlog

    async def failed(self, session_id: int, error: Exception, delivered: int) -> None:
        """A post was refused: record it, and queue the thread's later posts behind it."""
        self._backlog.add(session_id)
        await self.store.mark_sent(session_id, delivered)
        retry = time.time() + self.backoff
        await self.store.mark_failed(session_id, f"{type(error).__name__}: {error}", retry)
        log.warning(
            "session %d: post failed (%s); queued for retry", session_id, type(error).__name__
        )

    async def run_once(self) -> int:
        """One pass over every thread with a due post; returns how many posts were delivered."""
        if self.platform is None:
            return 0
        now = time.time()
        due = await self.store.due(now, limit=500)
        threads = {post.session_id: post.key for post in due}
        delivered = 0
        for session_id, key in threads.items():
            delivered += await self._drain(self.platform, session_id, key, now)
        return delivered

    async def run(self, interval: float) -> None:
        """Pass after pass until cancelled (the first pass sends what a crash left behind)."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("outbox pass failed")
            await asyncio.sleep(interval)

    async def _drain(self, platform: Platform, session_id: int, key: SessionKey, now: float) -> int:
        async with self.lanes.hold(key), self.store.thread_lock(key):
            delivered = 0
            for queued in await self.store.unsent(session_id):
                if queued.next_attempt_at > now:
                    break  # backing off: later posts wait behind it
                try:
                    await platform.send(key, post_from_dict(queued.body))
                except Exception as exc:
                    await self.store.mark_sent(session_id, delivered)
                    delay = min(self.backoff * 2**queued.attempts, self.max_backoff)
                    error = f"{type(exc).__name__}: {exc}"
                    await self.store.mark_failed(session_id, error, now + delay)
                    log.warning(
                        "session %s: redelivery failed (%s); next try in %.0fs",
                        key,
                        type(exc).__name__,
                        delay,
                    )
                    return delivered
                delivered += 1
            await self.store.mark_sent(session_id, delivered)
            if not await self.store.has_unsent(session_id):
                self._backlog.discard(session_id)
            if delivered:
                log.info("session %s: outbox delivered %d post(s)", key, delivered)
            return delivered


@dataclass(eq=False)
class Delivery:
    """One turn's posts: sent in order as they happen, or left queued in the outbox.

    Each post is stored with its step before it is sent; the number sent since the last write
    is marked at the next one. Once a post fails (or the thread already has a backlog), later
    posts of the turn stay queued behind it for the outbox pass.
    """

    poster: Poster
    session_id: int
    key: SessionKey
    placeholder: str | None
    posts: list[Post] = field(default_factory=list)
    _delivered: int = 0

    def queued(self, post: Post | None) -> Post | None:
        """The post as the outbox keeps it: the turn's first one names the placeholder."""
        if post is None or self.placeholder is None:
            return post
        placeholder, self.placeholder = self.placeholder, None
        return dataclasses.replace(post, replaces=placeholder)

    def take(self) -> int:
        """Posts delivered since the last call, for the next store write to mark sent."""
        count, self._delivered = self._delivered, 0
        return count

    async def publish(self, post: Post | None) -> None:
        """Send a post just stored (its `queued` form), unless it must wait in the outbox."""
        if post is None:
            return
        self.posts.append(post)
        platform = self.poster.platform
        if platform is None:
            self._delivered += 1  # no platform: the caller posts what the result returns
            return
        if self.poster.blocked(self.session_id):
            return
        try:
            await platform.send(self.key, post)
        except Exception as exc:
            await self.poster.failed(self.session_id, exc, self.take())
            return
        self._delivered += 1

    async def finish(self) -> None:
        """Remove a placeholder that no post replaced, and mark what was sent."""
        platform = self.poster.platform
        if self.placeholder is not None and platform is not None:
            try:
                await platform.remove(self.key, self.placeholder)
            except Exception as exc:
                log.warning(
                    "session %d: placeholder left (%s)", self.session_id, type(exc).__name__
                )
        await self.poster.store.mark_sent(self.session_id, self.take())
