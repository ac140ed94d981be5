"""Delivery: the outbox is the only way out. A thread's posts go out in order, one at a time.

Each post is stored with the step that produced it; the thread's worker sends it and marks it
sent, with the platform's reference, as soon as the platform accepts it.

- A failure that may pass (a 429, a 5xx, the network) is tried again with backoff, and the
  thread's later posts wait behind it.
- A refusal for good (too long, a closed channel, no access) is tried once more as plain text,
  then set aside as a dead letter: the thread's later posts go on, and the thread is told, once,
  that a message could not be shown.
- A post whose delivery may have been cut short (queued by another process or before a crash,
  or a failure that may have reached the platform) is looked up on the platform first, so it is
  not posted twice.

A turn's "working on it" placeholder is a post too: the turn's first post replaces it, and the
turn's last step queues a `done` mark that removes it if nothing did. A case's card is a post in
a lane of its own (`card_lane`), shown as the case stands when it is sent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot import observe
from bot.service.messages import Post, post_from_dict, post_to_dict
from bot.service.moderation import CaseCard
from bot.service.platform import Platform, Refused
from bot.store.protocols import Conversations, Outbox
from bot.store.values import Fence, Outgoing, SessionKey, Step

log = logging.getLogger(__name__)

UNDELIVERABLE_TEXT = "I'm sorry, one of my messages could not be shown here."
DOUBTFUL_KEPT = 10_000  # posts remembered as maybe sent; a retried post is doubtful anyway
Cards = Callable[[int], Awaitable[CaseCard | None]]


class PosterStore(Outbox, Conversations, Protocol):
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
    cards: Cards
    apologist: Post  # who says that a message could not be shown
    backoff: float = 1.0
    max_backoff: float = 300.0
    _doubtful: OrderedDict[int, None] = field(default_factory=OrderedDict)  # may be posted

    async def deliver(self, key: SessionKey, fence: Fence | None) -> int:
        """Send the thread's due posts, oldest first, until one must wait; how many were sent.

        Call it holding the thread (`Threads.hold`): the first post left by another process or
        a crash is looked up before it is sent.
        """
        sent = 0
        first = True
        # Placeholders this pass posted (their reference and body) or replaced (None).
        shown: dict[int | None, tuple[str, dict[str, Any]] | None] = {}
        posts = await self.store.pending(key)
        while posts:
            queued = posts.pop(0)
            now = time.time()
            if queued.next_attempt_at > now:
                break  # backing off: later posts wait behind it
            live = (queued.placeholder, queued.placeholder_body) if queued.placeholder else None
            placeholder, body = shown.get(queued.turn, live) or (None, None)
            post = dataclasses.replace(queued, placeholder=placeholder, placeholder_body=body)
            doubtful = (
                post.id in self._doubtful
                or post.attempts > 0
                or (first and post.origin != self.store.owner)
            )
            first = False
            self._doubt(post.id)  # until marked sent: a crash or a failure may follow the send
            try:
                with observe.post(key, post.kind, post.id, post.body.get("text")):  # a span
                    ref = await self._send(key, post, doubtful)
            except Refused as exc:
                await self._refused(key, post, str(exc), fence)
                posts = await self.store.pending(key)  # the same post as plain text, or the next
                continue
            except Exception as exc:
                delay = min(self.backoff * 2**post.attempts, self.max_backoff)
                error = f"{type(exc).__name__}: {exc}"
                await self.store.mark_failed(post, error, now + delay, fence)
                why = type(exc).__name__
                log.warning("thread %s: a post failed (%s); next try in %.0fs", key, why, delay)
                break
            await self.store.mark_sent(post, ref, fence)
            self._doubtful.pop(post.id, None)
            sent += 1
            if post.kind == "working" and ref is not None:
                shown[post.turn] = (ref, post.body)
            elif post.placeholder is not None:
                shown[post.turn] = None
        return sent

    def _doubt(self, post_id: int) -> None:
        self._doubtful[post_id] = None
        self._doubtful.move_to_end(post_id)
        while len(self._doubtful) > DOUBTFUL_KEPT:
            self._doubtful.popitem(last=False)  # old enough to have been retried with attempts

    async def _refused(
        self, key: SessionKey, post: Outgoing, why: str, fence: Fence | None
    ) -> None:
        dead = await self.store.mark_refused(post, why, fence)
        if not dead:
            log.warning(
                "thread %s: post %d refused (%s); trying it as plain text", key, post.id, why
            )
            return
        log.warning("thread %s: post %d refused again (%s); set aside", key, post.id, why)
        apology = post.kind in ("reply", "handoff", "notice") and post.body.get("text") not in (
            UNDELIVERABLE_TEXT,
        )
        if apology:
            step = Step(key=key, session_id=post.session_id, posts=(post_to_dict(self.apologist),))
            await self.store.commit(dataclasses.replace(step, fence=fence))

    async def _send(self, key: SessionKey, queued: Outgoing, doubtful: bool) -> str | None:
        platform = self.platform
        if platform is None:
            return None  # no platform: the caller posts what the turn returns
        if queued.kind == "card":
            return await self._card(platform, key, queued, doubtful)
        post = post_from_dict(queued.body)
        if queued.kind == "done":
            if queued.placeholder is not None:
                await platform.remove(key, queued.placeholder)
            return None
        if queued.placeholder is not None and queued.kind == "working":
            await platform.remove(key, queued.placeholder)  # one placeholder at a time
        elif queued.placeholder is not None:
            post = await self._in_place(platform, key, post, queued)
        tag = str(queued.id)
        start, found = 0, None
        if doubtful:
            after = await self.store.last_ref(key)
            found, start = await platform.find(key, post, tag=tag, after=after)
            if start:
                log.info("thread %s: post %d was already there (%d part(s))", key, queued.id, start)
        ref = await platform.send(key, post, tag=tag, start=start, plain=queued.degraded)
        return found or ref

    async def _in_place(
        self, platform: Platform, key: SessionKey, post: Post, queued: Outgoing
    ) -> Post:
        """The post that supersedes its turn's placeholder: in its place when it is a reply by
        the placeholder's persona (a platform keeps a message's persona when it is edited),
        else as a new message, the placeholder removed first."""
        assert queued.placeholder is not None
        shown = post_from_dict(queued.placeholder_body) if queued.placeholder_body else None
        if post.kind == "reply" and shown is not None and shown.persona == post.persona:
            return dataclasses.replace(post, replaces=queued.placeholder)
        await platform.remove(key, queued.placeholder)
        return post

    async def _card(
        self, platform: Platform, key: SessionKey, queued: Outgoing, doubtful: bool
    ) -> str | None:
        """The case's card as it stands now: posted the first time, then updated in place."""
        card = await self.cards(int(queued.body["case"]))
        if card is None:
            return None
        tag = f"card-{queued.id}"
        shown = await self.store.last_ref(key)
        if shown is None and doubtful:
            shown = await platform.find_card(card, tag=tag)
        return await platform.send_card(card, shown, tag=tag) or shown
