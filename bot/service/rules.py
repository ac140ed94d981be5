"""The rules for an inbound message, given the thread's conversation: what its step stores.

A pure function of the message and the thread's latest session, run inside the transaction that
writes its result: who may start a conversation, "end", empty messages, a moderator holding the
thread, and what a turn begins with (the message, the long-message note, a placeholder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from bot.engine.agents import Persona
from bot.engine.transcript import Item, ModeratorMessage, Notice, UserTurn
from bot.engine.workflow import Workflow
from bot.service.messages import Post, post_to_dict
from bot.store.values import InboxRow, NewSession, Session, Step, TurnMark

EMPTY_TEXT = "I didn't get any text there. Could you type your question?"
LONG_TEXT = "Your message was long, so I read only its first {limit:,} characters."
ENDED_TEXT = "Conversation ended. Your next message to me starts a new one."
NOTHING_TO_END_TEXT = "There is no open conversation here to end. Mention me to start one."
WORKING_TEXT = "working on it…"
END_WORDS = frozenset({"end", "/end", "end conversation", "close"})

Outcome = Literal["turn", "ended", "replied", "ignored", "taken_over"]


def is_end_command(text: str) -> bool:
    """Whether a message asks to close the conversation ("end", "close", ...)."""
    return text.lower().strip(" .!") in END_WORDS


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules make of a message: the step to store, what follows, and the posts."""

    step: Step | None
    outcome: Outcome
    user: Item | None = None  # the stored message a turn answers
    posts: tuple[Post, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules of one workflow, for a platform with or without placeholders."""

    workflow: Workflow
    placeholders: bool
    max_message_chars: int

    def decide(self, row: InboxRow, found: Session | None) -> Verdict:
        """The step for an inbound message, given the thread's latest session."""
        message = row.message
        session = found if found is not None and found.status == "open" else None
        done = TurnMark(row.id, done=True)
        if session is None and not message.mentioned:
            return Verdict(Step(key=message.key, turn=done), "ignored")  # not the bot's thread
        if not message.text or (is_end_command(message.text) and session is None):
            text = NOTHING_TO_END_TEXT if message.text else EMPTY_TEXT
            return self._reply(Step(key=message.key, turn=done), text)
        if is_end_command(message.text):
            assert session is not None
            ended = Notice(f"Conversation ended by user {message.author}.")
            step = Step(session.id, items=(ended,), status="closed", turn=done)
            return self._reply(step, ENDED_TEXT, "ended")
        user = UserTurn(message.text, message.author)
        holder = session.taken_over_by if session is not None else None
        if session is not None and holder is not None:
            # A moderator holds the thread: keep the message, relay nothing to the model.
            moderator = message.author == holder
            kept: Item = ModeratorMessage(holder, message.text) if moderator else user
            return Verdict(Step(session.id, items=(kept,), turn=done), "taken_over")
        active = session.active_agent if session is not None else None
        persona = self.workflow.agent(self.workflow.entry_agent(active))
        posts = self._turn_posts(row, persona.display)
        started = TurnMark(row.id, started=True)
        dicts = tuple(post_to_dict(post) for post in posts)
        if session is None:
            new = NewSession(message.key, self.workflow.name, self.workflow.start)
            step = Step(opens=new, items=(user,), turn=started, posts=dicts)
        else:
            step = Step(session.id, items=(user,), turn=started, posts=dicts)
        return Verdict(step, "turn", user, posts)

    @property
    def persona(self) -> Persona:
        """Who speaks for the bot when no agent does: the start agent."""
        return self.workflow.agent(self.workflow.start).display

    def _reply(self, step: Step, text: str, outcome: Outcome = "replied") -> Verdict:
        post = Post("notice", text, self.persona)
        queued = dataclasses.replace(step, posts=(post_to_dict(post),))
        return Verdict(queued, outcome, posts=(post,))

    def _turn_posts(self, row: InboxRow, persona: Persona) -> tuple[Post, ...]:
        posts: list[Post] = []
        if row.message.cut:
            long = LONG_TEXT.format(limit=self.max_message_chars)
            posts.append(Post("notice", long, self.persona))
        if self.placeholders:
            posts.append(Post("working", WORKING_TEXT, persona))
        return tuple(posts)
