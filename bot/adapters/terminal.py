"""The terminal under the console: text made safe to print, colours, and lines typed by a person.

A pipe is read as it is. A TTY gets readline's editing, history and completion; while the bot
works its keys stay off the screen (Ctrl-D leaves, text typed waits in the next prompt), and it is
left as it was found.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TextIO

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# ECMA-48 escapes as keys send them: CSI ("\x1b[A", an arrow), SS3 ("\x1bOP"), OSC, and the rest.
_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|O.?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~]?)"
)
_PALETTE = ("36", "35", "34", "33", "96", "95", "94")  # cyan, magenta, blue, yellow, bright ones


def clean(text: str) -> str:
    """Drop control characters (terminal escapes) from text before it is printed."""
    return _CONTROL.sub("", text)


def clean_line(line: str) -> str:
    """A typed line as text: escape sequences (an arrow key that reached the input as "\\x1b[A")
    and control characters taken out, whitespace stripped; "" when nothing is left."""
    return clean(_ESCAPE.sub("", line)).strip()


@dataclass(frozen=True, slots=True)
class Style:
    """How lines look: ANSI colours on a terminal; plain text in a pipe or under NO_COLOR."""

    colour: bool = False

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and text else text

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def name(self, name: str) -> str:
        """A persona's name, bold, in a colour of its own (the same in every run)."""
        return self.paint(name, "1;" + _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)])

    def prompt(self, text: str) -> str:
        """The input prompt, with readline told that the colour codes take no room."""
        return f"\001\x1b[1;32m\002{text}\001\x1b[0m\002" if self.colour else text


PLAIN = Style()


class Terminal:
    """Where the person's lines come from: a pipe, read as it is, or a TTY, with readline's
    editing, history and completion of commands. While the bot works, a TTY's keys stay off
    the screen: Ctrl-D leaves, and text typed waits in the next prompt."""

    def __init__(
        self, stdin: TextIO, prompt: str = "you> ", commands: tuple[str, ...] = ()
    ) -> None:
        self.stdin = stdin
        self.prompt = prompt
        self.commands = commands
        self.tty = os.name == "posix" and stdin.isatty()
        self.prompted = False  # a prompt is on the screen with no line typed after it
        self._ahead = ""  # typed while the bot worked
        self._modes: list[Any] | None = None  # the TTY's modes at the start, to leave it so
        if self.tty:
            import termios

            self._modes = termios.tcgetattr(stdin.fileno())
            if not _set_up_readline(
                self._prefill, self._complete
            ):  # `input()` would print readline's marks
                self.prompt = prompt.replace("\001", "").replace("\002", "")

    async def read(self) -> str | None:
        """The next line, or None at the end of input (Ctrl-D at the prompt, a closed pipe)."""
        self.prompted = self.tty
        line = await _in_thread(self._ask if self.tty else self.stdin.readline)
        if not line:
            return None
        self.prompted = False
        return line

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[asyncio.Future[None]]:
        """While the bot works: yields a future set when the person presses Ctrl-D."""
        loop = asyncio.get_running_loop()
        left: asyncio.Future[None] = loop.create_future()
        if self._modes is None:
            yield left
            return
        import termios

        fd = self.stdin.fileno()
        before = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~(termios.ICANON | termios.ECHO)  # key by key, not echoed; Ctrl-C still is
        quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 1, 0
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode

        def key() -> None:
            try:
                data = os.read(fd, 1024)
            except OSError:  # the terminal went away
                data = b""
            if data and b"\x04" not in data:
                self._ahead = _typed(self._ahead, decode(data))
                return
            loop.remove_reader(fd)
            if not left.done():
                left.set_result(None)

        if not _watch(loop, fd, key):
            yield left
            return
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        try:
            yield left
        finally:
            loop.remove_reader(fd)
            with contextlib.suppress(termios.error, OSError):  # the terminal went away
                termios.tcsetattr(fd, termios.TCSANOW, before)

    def close(self) -> None:
        """Leave the TTY as it was found (readline is left mid-line by Ctrl-C)."""
        if self._modes is not None:
            import termios

            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.stdin.fileno(), termios.TCSADRAIN, self._modes)

    def _ask(self) -> str:
        try:
            return input(self.prompt) + "\n"
        except (EOFError, OSError):  # Ctrl-D, or the terminal went away
            return ""

    def _complete(self, text: str, state: int) -> str | None:
        found = [c for c in self.commands if c.startswith(text)] if text else []
        return found[state] + " " if state < len(found) else None

    def _prefill(self) -> None:
        import readline

        if self._ahead:
            readline.insert_text(self._ahead)
            readline.redisplay()
            self._ahead = ""


def _set_up_readline(
    prefill: Callable[[], None], complete: Callable[[str, int], str | None]
) -> bool:
    """Line editing and history for `input()`, Tab completing commands; no bracketed paste, so
    a pasted block arrives line by line (as piped) and no mode is left on after Ctrl-C. False
    when this Python has no readline: lines are read unedited."""
    try:
        import readline
    except ImportError:
        return False
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
        readline.parse_and_bind("set enable-bracketed-paste off")
    readline.set_completer_delims(" \t\n")
    readline.set_completer(complete)
    readline.set_pre_input_hook(prefill)
    return True


def _watch(loop: asyncio.AbstractEventLoop, fd: int, key: Callable[[], None]) -> bool:
    """Call `key` when `fd` has input; False where the loop cannot watch a TTY (macOS's kqueue):
    then keys typed while the bot works wait for the prompt, and Ctrl-D waits too."""
    try:
        loop.add_reader(fd, key)
    except (OSError, ValueError):
        return False
    return True


def _typed(ahead: str, keys: str) -> str:
    """The next prompt's text after `keys` were typed while the bot worked."""
    for char in _ESCAPE.sub("", keys):
        if char in "\x7f\b":
            ahead = ahead[:-1]
        elif char == "\x15":  # Ctrl-U
            ahead = ""
        elif char.isprintable():
            ahead += char
    return ahead


async def _in_thread(read: Callable[[], str]) -> str:
    """`read()` on a daemon thread of its own: leaving (Ctrl-C) does not wait for a line that
    may never come, as it would with `asyncio.to_thread`, whose pool is joined at exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()

    def settle(line: str | None, error: BaseException | None) -> None:
        if done.done():  # nobody waits any more
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(line or "")

    def run() -> None:
        try:
            outcome: tuple[str | None, BaseException | None] = (read(), None)
        except Exception as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the console has left
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="console input", daemon=True).start()
    return await done
