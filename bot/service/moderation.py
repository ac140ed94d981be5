"""Moderator actions on review cases: approve, reject, take over, hand back, close.

What an action does, which actions a card offers, and what moderators are shown are decided
here, once for every platform. An action runs inside the thread's lane (it never interleaves
with a turn) and is applied by the store in one transaction that refuses a stale action.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.engine.agents import Persona
from bot.engine.text import clean
from bot.engine.transcript import (
    AgentReply,
    HandoffRecord,
    Item,
    ModeratorMessage,
    Notice,
    UserTurn,
)
from bot.engine.workflow import Workflow
from bot.service.messages import Post, post_to_dict
from bot.service.threads import Threads
from bot.store.protocols import Cases, Conversations
from bot.store.values import Case, CaseStatus, Decision, Holder, Status

log = logging.getLogger(__name__)

Action = Literal["approve", "reject", "takeover", "handback", "close"]
ACTIONS: tuple[Action, ...] = ("approve", "reject", "takeover", "handback", "close")
MODERATOR = Persona("Moderator", emoji=":shield:")
_LIVE: tuple[CaseStatus, ...] = ("open", "approved", "rejected")


class ModerationStore(Conversations, Cases, Protocol):
    """The parts of the store moderation uses."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: a line for the moderator, and posts for the user's thread."""

    ok: bool
    message: str
    case: Case | None = None
    posts: tuple[Post, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseCard:
    """What moderators are shown about a case, platform-neutral, with the buttons still useful."""

    case: Case
    excerpt: tuple[str, ...]
    actions: tuple[Action, ...]

    @property
    def title(self) -> str:
        case = self.case
        if case.call is not None:
            return f"Case #{case.id}: {case.agent} asks to run {case.call.tool} ({case.status})"
        if case.kind == "pause":
            return f"Case #{case.id}: review of {case.agent}'s step ({case.status})"
        return f"Case #{case.id}: {case.agent} review ({case.status})"


def available(case: Case, taken_over: bool, closed: bool = False) -> tuple[Action, ...]:
    """The actions a card offers: none once closed; approve and reject only while open (an
    approval or a pause offers nothing else, and nothing once its conversation is closed)."""
    if case.kind != "review":  # an approval, a pipeline's pause: a verdict, nothing else
        return ("approve", "reject") if case.status == "open" and not closed else ()
    if case.status == "closed":
        return ()
    decide: tuple[Action, ...] = ("approve", "reject") if case.status == "open" else ()
    return (*decide, "handback" if taken_over else "takeover", "close")


class Moderation:
    """Applies moderator actions to the cases of one workflow's conversations."""

    def __init__(self, workflow: Workflow, store: ModerationStore, threads: Threads) -> None:
        self.workflow = workflow
        self.store = store
        self.threads = threads

    async def card(self, case: Case, lines: int = 6) -> CaseCard:
        """The case with a short excerpt of the conversation's visible messages."""
        session = await self.store.get_session(case.session_id)
        excerpt: list[str] = []
        for entry in await self.store.recent(case.session_id, 40):
            item = entry.item
            if isinstance(item, UserTurn):
                excerpt.append(f"user: {item.text}")
            elif isinstance(item, AgentReply) and item.text:
                excerpt.append(f"{item.agent}: {item.text}")
            elif isinstance(item, ModeratorMessage):
                excerpt.append(f"moderator: {item.text}")
            elif isinstance(item, HandoffRecord) and item.data and item.target == case.agent:
                excerpt.append(f"handoff from {item.source}: {_pairs(item.data)}")
        taken_over = session is not None and session.taken_over_by is not None
        lines_kept = tuple(_clip(line) for line in excerpt[-lines:])
        if case.call is not None:
            lines_kept = (_clip(f"call: {case.call.tool}({arguments(case.call.arguments)})"),)
            lines_kept += tuple(_clip(line) for line in excerpt[-(lines - 1) :])
            if case.result is not None:
                lines_kept += (_clip(f"result: {case.result.content}"),)
        closed = session is None or session.status == "closed"
        return CaseCard(case, lines_kept, available(case, taken_over, closed))

    async def act(
        self,
        case_id: int,
        action: Action,
        moderator: str,
        *,
        agent: str | None = None,
        note: str | None = None,
    ) -> ActionResult:
        """Apply `action` by `moderator`; a stale or impossible action changes nothing."""
        case = await self.store.get_case(case_id)
        if case is None:
            return ActionResult(False, f"There is no case #{case_id}.")
        async with self.threads.hold(case.key) as fence:
            session = await self.store.get_session(case.session_id)
            holder = session.taken_over_by if session is not None else None
            change = self._plan(case, action, moderator, holder, agent, note)
            if case.kind != "review" and (session is None or session.status == "closed"):
                change = f"Case #{case.id}: the conversation is closed; nothing was run."
            if isinstance(change, str):
                return ActionResult(False, change, case)
            post = Post("notice", change.announce, MODERATOR, None)
            done = await self.store.decide(
                Decision(
                    case.id,
                    action,
                    moderator,
                    change.expect,
                    change.status,
                    change.holder,
                    change.items,
                    change.active,
                    change.session_status,
                    posts=(post_to_dict(post),),
                    resume=change.resume,
                    fence=fence,
                )
            )
        if done is None:
            fresh = await self.store.get_case(case.id)
            return ActionResult(False, _stale(fresh or case), fresh)
        log.info("case #%d: %s by %s", case.id, action, moderator)
        return ActionResult(True, f"Case #{case.id}: {change.announce}", done, (post,))

    def _plan(
        self,
        case: Case,
        action: Action,
        moderator: str,
        holder: str | None,
        agent: str | None,
        note: str | None = None,
    ) -> _Change | str:
        """What the action changes, or why it cannot be done."""
        if case.status == "closed":
            return f"Case #{case.id} is already closed."
        if case.kind != "review":
            return self._decide(case, action, moderator, note)
        match action:
            case "approve" | "reject":
                if case.status != "open":
                    return _stale(case)
                verdict: CaseStatus = "approved" if action == "approve" else "rejected"
                said = ModeratorMessage(moderator, f"The moderator {verdict} the request.")
                return _Change(
                    f"A moderator {verdict} this request.", ("open",), verdict, items=(said,)
                )
            case "takeover":
                if holder is not None:
                    return f"Case #{case.id} is already taken over by {holder}."
                return _Change(
                    "A moderator has joined this conversation; the assistant will stay quiet "
                    "until they hand it back.",
                    holder=Holder(moderator),
                    items=(Notice(f"{moderator} took over."),),
                )
            case "handback":
                if holder is None:
                    return f"Case #{case.id} is not taken over."
                target = agent or case.agent
                if target not in self.workflow.agents:
                    return f"There is no agent named {target!r}."
                return _Change(
                    f"The moderator handed the conversation back to {target}.",
                    holder=Holder(None),
                    items=(Notice(f"{moderator} handed back to {target}."),),
                    active=target,
                )
            case "close":
                return _Change(
                    "A moderator closed this conversation.",
                    status="closed",
                    holder=Holder(None),
                    items=(Notice(f"Closed by moderator {moderator}."),),
                    session_status="closed",
                )
        return f"Unknown action {action!r}."

    def _decide(
        self, case: Case, action: Action, moderator: str, note: str | None
    ) -> _Change | str:
        """Approve or reject a call or a pipeline's step: the verdict (with the moderator's
        note, which every agent reads) is stored with the thread's job of going on (running
        the call once approved; the next step, or the same one again)."""
        if action not in ("approve", "reject"):
            return f"Case #{case.id} waits for a verdict: approve or reject it."
        if case.status != "open":
            return _stale(case)
        verdict: CaseStatus = "approved" if action == "approve" else "rejected"
        what = f"the call to {case.call.tool}" if case.call else f"{case.agent}'s step"
        said = ModeratorMessage(moderator, note) if note else None
        return _Change(
            f"A moderator {verdict} this request.",
            ("open",),
            verdict,
            items=(Notice(f"{moderator} {verdict} {what}."), *((said,) if said else ())),
            resume=True,
        )


def summary(case: Case) -> str:
    """What a case is about, in one line: the call asked for, or the review's reason."""
    if case.call is not None:
        return f"{case.call.agent} asks to run {case.call.tool}({arguments(case.call.arguments)})"
    return case.reason or ""


def arguments(text: str) -> str:
    """A call's JSON arguments as moderators read them: `name=value, ...`."""
    try:
        given = json.loads(text or "{}")
    except ValueError:  # JSONDecodeError, or a number too long to read
        return text
    return _pairs(given) if isinstance(given, dict) else text


def _pairs(given: dict[str, Any]) -> str:
    return ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in given.items()
    )


@dataclass(frozen=True, slots=True)
class _Change:
    """What one moderator action changes, applied by the store in one transaction."""

    announce: str
    expect: tuple[CaseStatus, ...] = _LIVE
    status: CaseStatus | None = None
    holder: Holder | None = None
    items: tuple[Item, ...] = ()
    active: str | None = None
    session_status: Status | None = None
    resume: bool = False


def _stale(case: Case) -> str:
    who = f" by {case.moderator}" if case.moderator else ""
    return f"Case #{case.id} was already {case.status}{who}; nothing changed."


def _clip(text: str, limit: int = 300) -> str:
    """A line of a card: cleaned (no hidden or bidi marks, even from JSON escapes), on one
    line, cut to `limit`."""
    text = " ".join(clean(text, 4 * limit)[0].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
