"""What adapters hand the service, and what the service hands back to post."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bot.engine.agents import Persona
from bot.store.values import Case, Session, SessionKey

PostKind = Literal["reply", "handoff", "notice", "working", "done"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A user's message, already translated from the platform's payload.

    `mentioned` says the bot was addressed directly (a mention, a DM, the console): only such a
    message starts a conversation in a thread that has none open.
    """

    platform: str
    channel: str
    thread: str
    text: str
    event_id: str | None = None
    author: str = "user"
    mentioned: bool = True
    stamp: str | None = None  # the platform's order for the thread's messages (else: arrival)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.platform, self.channel, self.thread)


@dataclass(frozen=True, slots=True)
class Post:
    """One message the adapter should post in the thread, and as whom."""

    kind: PostKind
    text: str
    persona: Persona
    agent: str | None = None
    replaces: str | None = None  # the placeholder this post supersedes (set when it is sent)


def post_to_dict(post: Post) -> dict[str, Any]:
    """A post as stored in the outbox."""
    persona = post.persona
    return {
        "kind": post.kind,
        "text": post.text,
        "agent": post.agent,
        "persona": [persona.name, persona.emoji, persona.avatar_url],
    }


def post_from_dict(data: dict[str, Any]) -> Post:
    """A post read back from the outbox."""
    return Post(
        data["kind"],
        data["text"],
        Persona(*data["persona"]),
        data.get("agent"),
    )


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The outcome of handling one incoming message."""

    session: Session | None
    posts: tuple[Post, ...] = field(default=())
    duplicate: bool = False
    ignored: bool = False
    taken_over: bool = False
    cases: tuple[Case, ...] = ()
    failed: bool = False  # the store failed; the user was told so directly
