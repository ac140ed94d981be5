"""The console adapter: a conversation in the terminal, one line per message.

The person at the terminal is both the customer and a moderator: moderator commands become the
same `Click`s a card's buttons send. On a terminal (a TTY) it reads like a chat: lines are edited
and recalled with readline, names and notices are coloured (unless NO_COLOR), a status line says
who is thinking, and Ctrl-C or Ctrl-D leave at once, also in the middle of a turn: the turn's
steps are stored as they happen, and the thread's next message goes on with it. Piped in and
out, it reads and prints plain lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

from bot.adapters.terminal import PLAIN, Style, Terminal, clean, clean_line
from bot.engine.agents import Persona
from bot.engine.transcript import AgentReply, UserTurn
from bot.service import ACTIONS, CaseCard, Click, ConversationService, IncomingMessage, Post
from bot.service.moderation import summary
from bot.store.values import SessionKey

PLATFORM = "console"
CHANNEL = "local"
HELP = "Commands: /end closes the conversation, /new starts another, /quit leaves, /help."
MODERATOR_HELP = (
    "Moderators: /cases, /approve N [note], /reject N [note], /takeover N, /handback N [agent], "
    "/close N, "
    "/mod N text (speak in case N's thread as the moderator)."
)
CONSOLE_MODERATOR = "console-moderator"
COMMANDS = (
    *("/cases", "/end", "/exit", "/help", "/mod", "/new", "/quit"),
    *(f"/{action}" for action in ACTIONS),
)
_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def new_thread_name() -> str:
    """A fresh thread name, readable and unique enough for one machine."""
    return time.strftime("console-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def render(post: Post, style: Style = PLAIN) -> str:
    """One post as console lines: the persona's name on replies, an arrow on handoffs."""
    if post.kind == "handoff":
        return style.dim(f"  ↪ {clean(post.text)}")
    if post.kind == "notice":
        return style.dim(f"  ! {clean(post.text)}")
    return f"{style.name(clean(post.persona.name))}: {clean(post.text)}"


class ConsolePlatform:
    """The terminal as a `Platform`: posts are printed; the one person there moderates.

    `live`: a status line ("⠹ Returns is thinking…") while a turn runs, erased by the next line.
    """

    name = PLATFORM
    placeholders = False
    cards_setting: str | None = None  # cards are printed
    stream_rate: float | None = None
    stream_interval: float | None = 0.05  # a terminal takes every word as it comes
    redelivers = False

    def __init__(
        self,
        stdout: TextIO,
        style: Style = PLAIN,
        *,
        live: bool = False,
        stderr: TextIO | None = None,
    ) -> None:
        self._stdout = stdout
        self._stderr = stderr or stdout
        self.style = style
        self.live = live
        self.thinker = ""  # whom the status line names; the console sets it before a turn
        self._shown = 0  # the width of the status line on the screen (0: none)
        self._closed = False
        self._writing: tuple[Persona, str] | None = None  # a reply printed as it is written

    def say(self, line: str) -> None:
        self._erase()
        self._stdout.write(line + "\n")
        self._stdout.flush()

    def note(self, line: str) -> None:
        """A line about the console rather than from the conversation, dimmed."""
        self.say(self.style.dim(line))

    def moderators(self, text: str) -> None:
        self.say(f"{self.style.paint('[moderators]', '33')} {text}")

    def aside(self, line: str) -> None:
        """A line beside the chat on stderr (a log line under --verbose)."""
        self._erase()
        self._stderr.write(line + "\n")
        self._stderr.flush()

    def close(self) -> None:
        """No status line any more: the console is leaving, perhaps in the middle of a turn."""
        self._erase()
        self._closed = True

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        if post.kind in ("reply", "handoff"):
            self.thinker = post.persona.name  # who goes on, if the turn does
        if post.kind == "working":
            return None
        line = render(post, self.style)
        writing, self._writing = self._writing, None
        if writing is not None:  # the reply was printed as it came: finish its line
            printed = render(Post("reply", writing[1], writing[0]), self.style)
            rest = line[len(printed) :] if line.startswith(printed) else "\n" + line
            self._stdout.write(rest + "\n")
            self._stdout.flush()
            return None
        self.say(line)
        return None

    async def show(self, key: SessionKey, ref: str | None, text: str, persona: Persona) -> None:
        """On a terminal, a reply is printed as it is written (words are only ever added: what
        would have to change is left for the whole reply, printed on a line of its own)."""
        if not self.live or self._closed:
            return
        printed = self._writing[1] if self._writing and self._writing[0] == persona else None
        if printed is None:
            self._erase()
            self._stdout.write(render(Post("reply", "", persona), self.style))
            printed = ""
        if text.startswith(printed):
            self._stdout.write(clean(text[len(printed) :]))
            self._stdout.flush()
            self._writing = (persona, text)

    async def find(
        self, key: SessionKey, post: Post, *, tag: str, after: str | None
    ) -> tuple[str | None, int]:
        return None, 0  # a terminal keeps nothing: print it again

    async def remove(self, key: SessionKey, ref: str) -> None:
        return None

    @contextlib.asynccontextmanager
    async def working(self, key: SessionKey) -> AsyncIterator[None]:
        if not self.live:
            yield
            return
        spinner = asyncio.create_task(self._spin())
        try:
            yield
        finally:
            spinner.cancel()  # not awaited: it holds nothing, and this task may be cancelled
            self._erase()

    async def find_card(self, card: CaseCard, *, tag: str) -> str | None:
        return None

    async def send_card(self, card: CaseCard, ref: str | None, *, tag: str) -> str | None:
        case = card.case
        if ref is None:
            reason = f": {case.reason}" if case.reason else ""
            commands = ", ".join(f"/{action} {case.id}" for action in card.actions)
            self.moderators(f"{card.title} opened{reason} ({commands})")
        return f"console-card-{case.id}"

    async def is_moderator(self, click: Click) -> bool:
        return True

    async def tell(self, click: Click, text: str) -> None:
        self.moderators(text)

    async def _spin(self) -> None:
        started = time.monotonic()
        for frame in itertools.cycle(_FRAMES):
            await asyncio.sleep(0.1)  # a quick answer shows no status at all
            seconds = int(time.monotonic() - started)
            if self._writing is not None:
                continue  # the reply being written says it all
            who = f"{clean(self.thinker)} is thinking…" if self.thinker else "thinking…"
            self._show(f"{frame} {who}" + (f" {seconds}s" if seconds else ""))

    def _show(self, status: str) -> None:
        if self._closed:
            return
        status = status[: shutil.get_terminal_size().columns - 1]  # one row: \r goes back
        self._erase()
        self._stdout.write(self.style.dim(status))
        self._stdout.flush()
        self._shown = len(status)

    def _erase(self) -> None:
        if self._shown:  # no escape codes: plain spaces, for NO_COLOR too
            self._stdout.write("\r" + " " * self._shown + "\r")
            self._shown = 0


async def _unless(left: asyncio.Future[None], work: Coroutine[Any, Any, bool]) -> bool:
    """`work`'s answer, or False as soon as `left` is set (Ctrl-D while the bot works)."""
    task = asyncio.create_task(work)
    either: set[asyncio.Future[Any]] = {task, left}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()  # nothing when it is done
    return task.result() if task.done() and not task.cancelled() else False


@dataclass(eq=False)
class Console:
    """Reads lines from the terminal, sends them through the service, which prints its posts.

    `resume` gives the command that resumes a thread, printed when the console leaves.
    """

    service: ConversationService
    platform: ConsolePlatform
    thread: str
    terminal: Terminal
    resume: Callable[[str], str]

    @property
    def key(self) -> SessionKey:
        return SessionKey(PLATFORM, CHANNEL, self.thread)

    async def run(self) -> None:
        """The read-answer loop, until /quit, the end of input or Ctrl-D; Ctrl-C cancels it.
        Either way it says how to resume."""
        try:
            await self._greet()
            while (line := await self.terminal.read()) is not None:
                text = clean_line(line)
                if not text:  # an empty line, or one of escape sequences only
                    continue
                async with self.terminal.busy() as left:
                    if not await _unless(left, self._step(text)):
                        break
        finally:
            self.platform.close()
            if self.terminal.prompted:  # Ctrl-C or Ctrl-D at the prompt: end its line
                self.platform.say("")
            self.terminal.close()
            self.platform.note(f"Bye. Resume this conversation with: {self.resume(self.thread)}")

    async def _step(self, text: str) -> bool:
        """Act on one line; False to leave."""
        if text.startswith("/"):
            return await self._command(text)
        await self._send(self._message(text))
        return True

    async def _send(self, message: IncomingMessage) -> None:
        if self.platform.live:
            self.platform.thinker = await self._next_speaker(message.key)
        await self.service.handle(message)

    async def _next_speaker(self, key: SessionKey) -> str:
        """Who answers the next message (for the status line): the open conversation's agent,
        or the start agent."""
        session = await self.service.store.find_session(key)
        active = session.active_agent if session is not None and session.status == "open" else None
        workflow = self.service.workflow
        return workflow.agent(workflow.entry_agent(active)).display.name

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
                self.platform.note("  ! There is no open conversation to end.")
            else:
                await self.service.handle(self._message("end"))
        elif command == "/new":
            if await self.service.owns(self.key):
                await self.service.handle(self._message("end"))
            self.thread = new_thread_name()
            self.platform.note(f"  ! New conversation in thread {self.thread}.")
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
                say(f"  #{case.id} {case.status}{held}: {case.key.thread} ({summary(case)})")
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
            await self._send(
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
        action = command.lstrip("/")
        rest = " ".join(args[1:]) or None  # the agent to hand back to, or a verdict's note
        agent, note = (rest, None) if action == "handback" else (None, rest)
        result = await self.service.click(
            Click(args[0], action, CONSOLE_MODERATOR, agent=agent, note=note)
        )
        if result.ok:
            self.platform.moderators(result.message)

    async def _greet(self) -> None:
        store = self.service.store
        session = await store.find_session(self.key)
        note = self.platform.note
        if session is None:
            note(f"Thread {self.thread}. {HELP}")
            return
        state = "open" if session.status == "open" else "closed (type to start a new one)"
        note(f"Resuming thread {self.thread}: {session.active_agent}, {state}.")
        for entry in await store.recent(session.id, 6):
            item = entry.item
            if isinstance(item, UserTurn):
                note(f"  you: {clean(item.text)}")
            elif isinstance(item, AgentReply) and item.text:
                persona = self.service.workflow.agents.get(item.agent)
                name = persona.display.name if persona else item.agent
                note(f"  {clean(name)}: {clean(item.text)}")
