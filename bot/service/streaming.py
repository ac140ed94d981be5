"""Replies that appear as they are written: the turn's placeholder, edited as the text grows.

A streamed reply is shown in the placeholder its agent's turn posted through the outbox (under
that agent's persona), so nothing here needs to be durable: the whole reply is stored as before,
and its post replaces the placeholder in place. After a crash the resumed turn writes into the same
placeholder, whose reference the store keeps, and its final post replaces it: never a second
message. A platform without placeholders (the console) shows the text as it comes.

Edits are best effort and bounded: the first one goes out at once; later ones at most once per
`interval` per message, and never more than the platform's `stream_rate` across all messages;
each shows the latest text (what came meanwhile is folded in). Before a step is stored and posted,
the turn's stream is settled: an edit under way finishes, and none comes after the final post.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.engine.agents import Persona
from bot.service.messages import post_from_dict
from bot.service.platform import Platform
from bot.service.rules import WORKING_TEXT
from bot.store.values import SessionKey

log = logging.getLogger(__name__)

SETTLE_S = 5.0  # at most this long for an edit under way when the turn posts its step


class Placeholders(Protocol):
    async def placeholder(self, turn: int) -> tuple[str, dict[str, Any]] | None:
        """The turn's live placeholder: its reference and its post."""
        ...


@dataclass(eq=False)
class _Live:
    """One reply being written, and the message that shows it."""

    key: SessionKey
    turn: int
    persona: Persona
    text: str = ""  # the latest text written (raw)
    shown: str = ""  # what the message shows now ("" at first: the placeholder's own text)
    last: float = 0.0  # when the last edit went out (monotonic)
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set with `closed`
    task: asyncio.Task[None] | None = None


class Rate:
    """A token bucket: at most `per_s` edits a second across all messages, `burst` at once.

    The last `kept` tokens are for the first edit of a message (the one people wait for):
    later edits of a message being written wait until more than those are left."""

    def __init__(self, per_s: float | None, burst: int = 5, kept: int = 2) -> None:
        self.per_s = per_s
        self.burst = float(burst)
        self.kept = float(kept)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def reserve(self, first: bool = False) -> float:
        """Count an edit; how long it must wait for its turn (0: it may go out now)."""
        if self.per_s is None:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s) - 1
        self._at = now
        floor = 0.0 if first else self.kept
        return max(0.0, (floor - self._tokens) / self.per_s)


class Streamer:
    """Shows each turn's reply as it is written, in the platform's placeholder."""

    def __init__(
        self,
        platform: Platform | None,
        store: Placeholders,
        showable: Callable[[str], str],
        *,
        interval: float,
        enabled: bool = True,
    ) -> None:
        self.platform = platform
        self.store = store
        self.showable = showable
        self.interval = getattr(platform, "stream_interval", None) or interval
        self.enabled = enabled and platform is not None
        self.rate = Rate(getattr(platform, "stream_rate", None))
        self._live: dict[int, _Live] = {}

    def write(self, key: SessionKey, turn: int, persona: Persona, text: str) -> None:
        """The reply of the agent speaking as `persona` now reads `text` ("" starts over)."""
        if not self.enabled:
            return
        live = self._live.get(turn)
        if live is None or live.persona != persona:
            live = self._live[turn] = _Live(key, turn, persona)
            live.task = asyncio.create_task(self._run(live), name=f"stream {key}")
        live.text = text
        live.wake.set()

    async def settle(self, turn: int) -> None:
        """Stop showing the turn's reply: the edit under way (if any) finishes first."""
        live = self._live.pop(turn, None)
        if live is None or live.task is None:
            return
        live.closed = True
        live.done.set()
        live.wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(live.task), SETTLE_S)
        except TimeoutError:
            live.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live.task

    async def _run(self, live: _Live) -> None:
        platform = self.platform
        assert platform is not None
        ref = await self._placeholder(platform, live)
        if ref is None and platform.placeholders:
            return  # no placeholder of this persona to write into
        while not live.closed:
            await live.wake.wait()
            live.wake.clear()
            if live.closed:
                return
            pause = max(live.last + self.interval - time.monotonic(), 0.0)
            if live.last and pause:
                await _nap(live, pause)  # what comes meanwhile is folded into this edit
            wait = self.rate.reserve(first=not live.shown)
            if wait:
                await _nap(live, wait)
            if live.closed:
                return
            text = self.showable(live.text) or (WORKING_TEXT if live.shown else "")
            if not text or text == live.shown:
                continue
            try:
                await platform.show(live.key, ref, text, live.persona)
            except Exception as exc:  # best effort: the final post shows the whole reply
                log.info("thread %s: an edit of a reply being written failed (%s)", live.key, exc)
            live.shown, live.last = text, time.monotonic()

    async def _placeholder(self, platform: Platform, live: _Live) -> str | None:
        if not platform.placeholders:
            return None
        try:
            found = await self.store.placeholder(live.turn)
        except Exception as exc:
            log.info("thread %s: no placeholder to write into (%s)", live.key, exc)
            return None
        if found is None or post_from_dict(found[1]).persona != live.persona:
            return None
        return found[0]


async def _nap(live: _Live, seconds: float) -> None:
    """Wait `seconds`, or less when the reply is settled (its post must not wait for an edit
    that no longer matters)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(live.done.wait(), seconds)
