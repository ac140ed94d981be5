"""The console adapter: a conversation in the terminal, one line per message."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import TextIO, cast

from bot.engine.transcript import AgentReply, UserTurn
from bot.service import ConversationService, IncomingMessage, Moderation, Post
from bot.service.moderation import ACTIONS, Action
from bot.store.base import SessionKey

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


class Console:
    """Reads lines from `stdin`, sends them through the service, prints posts as they come."""

    def __init__(
        self,
        service: ConversationService,
        *,
        thread: str,
        stdin: TextIO,
        stdout: TextIO,
        prompt: bool = False,
    ) -> None:
        self.service = service
        self.moderation = Moderation(service)
        self.thread = thread
        self._stdin = stdin
        self._stdout = stdout
        self._prompt = prompt

    @property
    def key(self) -> SessionKey:
        return SessionKey(PLATFORM, CHANNEL, self.thread)

    def say(self, line: str) -> None:
        self._stdout.write(line + "\n")
        self._stdout.flush()

    async def emit(self, post: Post) -> None:
        self.say(render(post))

    async def run(self) -> None:
        """The read-answer loop, until /quit or end of input."""
        await self._greet()
        while True:
            if self._prompt:
                self._stdout.write("you> ")
                self._stdout.flush()
            line = await asyncio.to_thread(self._stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not await self._command(text):
                    break
                continue
            result = await self.service.handle(
                IncomingMessage(PLATFORM, CHANNEL, self.thread, text, author="you"),
                emit=self.emit,
            )
            for case in result.cases:
                card = await self.moderation.card(case)
                reason = f": {case.reason}" if case.reason else ""
                self.say(
                    f"[moderators] {card.title} opened{reason} (/approve {case.id}, "
                    f"/reject {case.id}, /takeover {case.id}, /close {case.id})"
                )
        self.say(f"Bye. Resume this conversation with: --thread {self.thread}")

    async def _command(self, line: str) -> bool:
        command, *args = line.split(maxsplit=2)
        command = command.lower()
        if command in ("/quit", "/exit"):
            return False
        if command in ("/cases", "/mod") or command.lstrip("/") in ACTIONS:
            await self._moderate(command, args)
            return True
        if command == "/end":
            result = await self.service.end(self.key, by="you")
            for post in result.posts:
                await self.emit(post)
            if result.ignored:
                self.say("  ! There is no open conversation to end.")
        elif command == "/new":
            await self.service.end(self.key, by="you")
            self.thread = new_thread_name()
            self.say(f"  ! New conversation in thread {self.thread}.")
        else:
            self.say(HELP)
            self.say(MODERATOR_HELP)
        return True

    async def _moderate(self, command: str, args: list[str]) -> None:
        """The console's moderator commands: the one person at the terminal is both roles."""
        if command == "/cases":
            cases = await self.service.store.cases(limit=20)
            for case in cases:
                held = f", {case.moderator}" if case.moderator else ""
                self.say(f"  #{case.id} {case.status}{held}: {case.key.thread} ({case.reason})")
            if not cases:
                self.say("  No cases.")
            return
        if not args or not args[0].isdigit():
            self.say(MODERATOR_HELP)
            return
        case_id = int(args[0])
        if command == "/mod":
            target = await self.service.store.get_case(case_id)
            if target is None or len(args) < 2:
                self.say(MODERATOR_HELP)
                return
            await self.service.handle(
                IncomingMessage(
                    target.key.platform,
                    target.key.channel,
                    target.key.thread,
                    args[1],
                    author=CONSOLE_MODERATOR,
                    mentioned=False,
                )
            )
            self.say(f"  [moderator → {target.key.thread}] {clean(args[1])}")
            return
        action = cast(Action, command.lstrip("/"))
        agent = args[1] if len(args) > 1 else None
        result = await self.moderation.act(case_id, action, CONSOLE_MODERATOR, agent=agent)
        self.say(f"[moderators] {result.message}")
        for post in result.posts:
            await self.emit(post)

    async def _greet(self) -> None:
        store = self.service.store
        session = await store.find_session(self.key)
        if session is None:
            self.say(f"Thread {self.thread}. {HELP}")
            return
        state = "open" if session.status == "open" else "closed (type to start a new one)"
        self.say(f"Resuming thread {self.thread}: {session.active_agent}, {state}.")
        for entry in await store.recent(session.id, 6):
            item = entry.item
            if isinstance(item, UserTurn):
                self.say(f"  you: {clean(item.text)}")
            elif isinstance(item, AgentReply) and item.text:
                persona = self.service.workflow.agents.get(item.agent)
                name = persona.display.name if persona else item.agent
                self.say(f"  {clean(name)}: {clean(item.text)}")
