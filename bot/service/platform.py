"""What the service needs of a chat platform, and what a platform hands the service.

An adapter implements `Platform` and turns platform events into `IncomingMessage`s and button
clicks into `Click`s; every conversation rule (dedupe, "end", who may act on a case, the reply
when the store fails, which card to show) lives in the service.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.engine.agents import Persona
from bot.service.messages import Post
from bot.service.moderation import CaseCard
from bot.store.values import SessionKey


class Refused(Exception):
    """The platform refused a post for good (too long, a closed channel, no access): sending
    it again as it is would fail again. The message names the platform's reason."""


@dataclass(frozen=True, slots=True)
class Click:
    """A person pressed a button on a case card (or typed a moderator command).

    `case` is the raw case id as the platform carried it (validated by the service);
    `context` is the platform's own payload, handed back to the adapter to check rights and
    answer privately.
    """

    case: str
    action: str
    actor: str
    context: Any = field(default=None, compare=False, repr=False)
    agent: str | None = None  # "hand back" to this agent rather than the case's
    note: str | None = None  # a verdict's note, for the agents (a pipeline's next step)
    id: str | None = None  # the platform's id of this click: a repeat of it counts once


class Platform(Protocol):
    """Post as a persona, show that the bot is working, post or update cards, check rights."""

    name: str
    placeholders: bool  # shows a "working on it" post that the turn's first post replaces
    cards_setting: str | None  # the setting that names where cards go, when it is not set
    stream_rate: float | None  # edits a second of replies being written, all messages together
    stream_interval: float | None  # the platform's own pace of such edits (else the setting's)
    redelivers: bool  # after a restart it delivers what was missed, perhaps after newer ones

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        """Post into the thread under the post's persona; a reference to the first message.

        `tag` identifies the post for `find`. A long post goes out in several parts; those
        before `start` are already there. `post.replaces` names a placeholder to update in place
        with the first part (set only for a reply by the placeholder's persona); when that
        fails (the placeholder is gone), post anew. `plain`: the platform refused the post
        before; send it once, as plain text cut to one message. Raise `Refused` when the
        platform refuses it for good.
        """
        ...

    async def find(
        self, key: SessionKey, post: Post, *, tag: str, after: str | None
    ) -> tuple[str | None, int]:
        """What the platform already shows of a post whose delivery may have been cut short (a
        crash, a timeout): the first part's reference and how many parts, looking after the
        thread's message `after` (the newest one known to be sent)."""
        ...

    async def remove(self, key: SessionKey, ref: str) -> None:
        """Remove a message the bot posted (a placeholder nothing replaced)."""
        ...

    async def show(self, key: SessionKey, ref: str | None, text: str, persona: Persona) -> None:
        """Show a reply being written: edit the placeholder `ref` to read `text` (its first
        part, escaped, mentions disabled), or, on a platform without placeholders, show the
        text as it grows. `text` is cleaned and bounded already; a failure is only logged."""
        ...

    def working(self, key: SessionKey) -> AbstractAsyncContextManager[None]:
        """Show that the bot is working on the thread while the context is open."""
        ...

    async def send_card(self, card: CaseCard, ref: str | None, *, tag: str) -> str | None:
        """Post a case card for moderators (or update the one at `ref`); its reference.
        Raise `Refused` when the platform refuses it for good."""
        ...

    async def find_card(self, card: CaseCard, *, tag: str) -> str | None:
        """The card posted with `tag`, if the platform has it (a crash cut its posting short)."""
        ...

    async def is_moderator(self, click: Click) -> bool:
        """Whether the clicker may act on cases, by the platform's rights."""
        ...

    async def tell(self, click: Click, text: str) -> None:
        """Answer the clicker privately (a refusal, or why nothing changed)."""
        ...
