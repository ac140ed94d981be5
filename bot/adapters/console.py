"""The console adapter: a conversation in the terminal, one line per message.

The person at the terminal is both the customer and a moderator: moderator commands become the
same `Click`s a card's buttons send.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

from bot.engine.transcript import AgentReply, UserTurn
from bot.service import ACTIONS, CaseCard, Click, ConversationService, IncomingMessage, Post
from bot.store.values import SessionKey

PLATFORM = "console"
CHANNEL = "local"
HELP = "Commands: /end closes the conversation, /new starts another, /quit leaves, /help."
MODERATOR_HELP = (
    "Moderators: /cases, /approve N, /reject N, /takeover N, /handback N [agent], /close N, "
    "/mod N text (speak in case N's thread as the moderator)."
)
CONSOLE_MODERATOR = "console-moderator"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x1b]")


def new_thread_name() -> str:
    """A fresh thread name, readable and unique enough for one machine."""
    return time.strftime("console-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def clean(text: str) -> str:
    """Drop control characters (terminal escapes) from text before it is printed."""
    return _CONTROL.sub("", text)


def render(post: Post) -> str:
    """One post as console lines: the persona's name on replies, an arrow on handoffs."""
    if post.kind == "handoff":
        return f"  ↪ {clean(post.text)}"
    if post.kind == "notice":
        return f"  ! {clean(post.text)}"
    return f"{clean(post.persona.name)}: {clean(post.text)}"


class ConsolePlatform:
    """The terminal as a `Platform`: posts are printed; the one person there moderates."""

    name = PLATFORM
    placeholders = False
    cards_setting: str | None = None  # cards are printed

    def __init__(self, stdout: TextIO) -> None:
        self._stdout = stdout

    def say(self, line: str) -> None:
        self.prompt(line + "\n")

    def prompt(self, text: str) -> None:
        self._stdout.write(text)
        self._stdout.flush()

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        if post.kind != "working":
            self.say(render(post))
        return None

    async def find(
        self, key: SessionKey, post: Post, *, tag: str, after: str | None
    ) -> tuple[str | None, int]:
        return None, 0  # a terminal keeps nothing: print it again

    async def remove(self, key: SessionKey, ref: str) -> None:
        return None

    @contextlib.asynccontextmanager
    async def working(self, key: SessionKey) -> AsyncIterator[None]:
        yield

    async def find_card(self, card: CaseCard, *, tag: str) -> str | None:
        return None

    async def send_card(self, card: CaseCard, ref: str | None, *, tag: str) -> str | None:
        case = card.case
        if ref is None:
            reason = f": {case.reason}" if case.reason else ""
            commands = ", ".join(f"/{action} {case.id}" for action in card.actions)
            self.say(f"[moderators] {card.title} opened{reason} ({commands})")
        return f"console-card-{case.id}"

    async def is_moderator(self, click: Click) -> bool:
        return True

    async def tell(self, click: Click, text: str) -> None:
        self.say(f"[moderators] {text}")


@dataclass(eq=False)
class Console:
    """Reads lines from `stdin`, sends them through the service, which prints its posts."""

    service: ConversationService
    platform: ConsolePlatform
    thread: str
    stdin: TextIO
    prompt: bool = False

    @property
    def key(self) -> SessionKey:
        return SessionKey(PLATFORM, CHANNEL, self.thread)

    async def run(self) -> None:
        """The read-answer loop, until /quit or end of input."""
        await self._greet()
        while True:
            if self.prompt:
                self.platform.prompt("you> ")
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not await self._command(text):
                break
            if not text.startswith("/"):
                await self.service.handle(self._message(text))
        self.platform.say(f"Bye. Resume this conversation with: --thread {self.thread}")

    def _message(self, text: str) -> IncomingMessage:
        return IncomingMessage(PLATFORM, CHANNEL, self.thread, text, author="you")

    async def _command(self, line: str) -> bool:
        command, *args = line.split(maxsplit=2)
        command = command.lower()
        if command in ("/quit", "/exit"):
            return False
        if command in ("/cases", "/mod") or command.lstrip("/") in ACTIONS:
            await self._moderate(command, args)
        elif command == "/end":
            if not await self.service.owns(self.key):
                self.platform.say("  ! There is no open conversation to end.")
            else:
                await self.service.handle(self._message("end"))
        elif command == "/new":
            if await self.service.owns(self.key):
                await self.service.handle(self._message("end"))
            self.thread = new_thread_name()
            self.platform.say(f"  ! New conversation in thread {self.thread}.")
        else:
            self.platform.say(HELP)
            self.platform.say(MODERATOR_HELP)
        return True

    async def _moderate(self, command: str, args: list[str]) -> None:
        """The console's moderator commands: the one person at the terminal is both roles."""
        say = self.platform.say
        if command == "/cases":
            cases = await self.service.store.cases(limit=20)
            for case in cases:
                held = f", {case.moderator}" if case.moderator else ""
                say(f"  #{case.id} {case.status}{held}: {case.key.thread} ({case.reason})")
            if not cases:
                say("  No cases.")
            return
        if not args:
            say(MODERATOR_HELP)
            return
        if command == "/mod":
            target = await self.service.store.get_case(int(args[0])) if args[0].isdigit() else None
            if target is None or len(args) < 2:
                say(MODERATOR_HELP)
                return
            key = target.key
            await self.service.handle(
                IncomingMessage(
                    key.platform,
                    key.channel,
                    key.thread,
                    args[1],
                    author=CONSOLE_MODERATOR,
                    mentioned=False,
                )
            )
            say(f"  [moderator → {key.thread}] {clean(args[1])}")
            return
        agent = args[1] if len(args) > 1 else None
        result = await self.service.click(
            Click(args[0], command.lstrip("/"), CONSOLE_MODERATOR, agent=agent)
        )
        if result.ok:
            say(f"[moderators] {result.message}")

    async def _greet(self) -> None:
        store = self.service.store
        session = await store.find_session(self.key)
        if session is None:
            self.platform.say(f"Thread {self.thread}. {HELP}")
            return
        state = "open" if session.status == "open" else "closed (type to start a new one)"
        self.platform.say(f"Resuming thread {self.thread}: {session.active_agent}, {state}.")
        for entry in await store.recent(session.id, 6):
            item = entry.item
            if isinstance(item, UserTurn):
                self.platform.say(f"  you: {clean(item.text)}")
            elif isinstance(item, AgentReply) and item.text:
                persona = self.service.workflow.agents.get(item.agent)
                name = persona.display.name if persona else item.agent
                self.platform.say(f"  {clean(name)}: {clean(item.text)}")
