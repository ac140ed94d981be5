"""The console adapter: a conversation in the terminal, one line per message."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import TextIO

from bot.engine.transcript import AgentReply, UserTurn
from bot.service import ConversationService, IncomingMessage, Post
from bot.store.base import SessionKey

PLATFORM = "console"
CHANNEL = "local"
HELP = "Commands: /end closes the conversation, /new starts another, /quit leaves, /help."
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
                if not await self._command(text.split()[0].lower()):
                    break
                continue
            await self.service.handle(
                IncomingMessage(PLATFORM, CHANNEL, self.thread, text, author="you"),
                emit=self.emit,
            )
        self.say(f"Bye. Resume this conversation with: --thread {self.thread}")

    async def _command(self, command: str) -> bool:
        if command in ("/quit", "/exit"):
            return False
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
        return True

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
