"""Delivery: the outbox is the only way out. A thread's posts go out in order, one at a time.

Each post is stored with the step that produced it; the thread's worker sends it and marks it
sent, with the platform's reference, as soon as the platform accepts it. A post that fails waits,
with backoff, and the thread's later posts wait behind it. A post whose delivery may have been
cut short (queued by another process or before a crash, or a failure that may have reached the
platform) is looked up on the platform before it is sent, so it is not posted twice.

A turn's "working on it" placeholder is a post too: the turn's first post replaces it, and the
turn's last step queues a `done` mark that removes it if nothing did.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from bot.service.messages import Post, post_from_dict
from bot.service.platform import Platform
from bot.store.protocols import Outbox
from bot.store.values import Fence, Outgoing, SessionKey

log = logging.getLogger(__name__)


class PosterStore(Outbox, Protocol):
    """The parts of the store delivery uses."""

    @property
    def owner(self) -> str:
        """This process, as the store names it in the posts it queues."""
        ...


@dataclass(eq=False)
class Poster:
    """Sends a thread's queued posts to one platform, in order, marking each as it is accepted."""

    platform: Platform | None
    store: PosterStore
    backoff: float = 1.0
    max_backoff: float = 300.0
    _doubtful: set[int] = field(default_factory=set)  # posts that may have reached the platform

    async def deliver(self, key: SessionKey, fence: Fence | None) -> int:
        """Send the thread's due posts, oldest first, until one fails; how many were sent.

        Call it holding the thread (`Threads.hold`): the first post left by another process or
        a crash is looked up before it is sent.
        """
        sent = 0
        first = True
        shown: dict[int | None, str | None] = {}  # placeholders this pass posted or replaced
        for queued in await self.store.pending(key):
            now = time.time()
            if queued.next_attempt_at > now:
                break  # backing off: later posts wait behind it
            post = dataclasses.replace(
                queued, placeholder=shown.get(queued.turn, queued.placeholder)
            )
            doubtful = post.id in self._doubtful or (first and post.origin != self.store.owner)
            first = False
            try:
                ref = await self._send(key, post, doubtful)
            except Exception as exc:
                self._doubtful.add(post.id)
                delay = min(self.backoff * 2**post.attempts, self.max_backoff)
                error = f"{type(exc).__name__}: {exc}"
                await self.store.mark_failed(post, error, now + delay, fence)
                why = type(exc).__name__
                log.warning("thread %s: a post failed (%s); next try in %.0fs", key, why, delay)
                break
            await self.store.mark_sent(post, ref, fence)
            self._doubtful.discard(post.id)
            sent += 1
            if post.kind == "working" or post.placeholder is not None:
                shown[post.turn] = ref if post.kind == "working" else None
        return sent

    async def _send(self, key: SessionKey, queued: Outgoing, doubtful: bool) -> str | None:
        platform = self.platform
        if platform is None:
            return None  # no platform: the caller posts what the turn returns
        post = post_from_dict(queued.body)
        if queued.kind == "done":
            if queued.placeholder is not None:
                await platform.remove(key, queued.placeholder)
            return None
        if queued.placeholder is not None:
            post = Post(post.kind, post.text, post.persona, post.agent, queued.placeholder)
        tag = str(queued.id)
        start, found = 0, None
        if doubtful:
            after = await self.store.last_ref(key)
            found, start = await platform.find(key, post, tag=tag, after=after)
            if start:
                log.info(
                    "thread %s: post %d was already on the platform (%d part(s))",
                    key,
                    queued.id,
                    start,
                )
        ref = await platform.send(key, post, tag=tag, start=start)
        return found or ref
