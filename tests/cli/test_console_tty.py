"""The console on a terminal: a real `python -m bot console` on a pseudo-terminal (the standard
`pty` module's `openpty`), typed at key by key: editing and history, Ctrl-C and Ctrl-D at the
prompt and while a model works, colour and NO_COLOR, the status line, and no log line in the
chat. A slow model is a small Chat Completions server that waits before it answers."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fakes.chat_completions import ChatCompletionsServer, Reply, completion
from tests.processes import ROOT, clean_env

UP, CTRL_C, CTRL_D = b"\x1b[A", b"\x03", b"\x04"
COLOUR = re.compile(rb"\x1b\[[0-9;]*m")


def _take_the_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # so that Ctrl-C typed there is a SIGINT to the child


class Tty:
    """A console process on a pseudo-terminal: keys typed in, everything it shows read out."""

    def __init__(self, db: Path, *args: str, **env: str) -> None:
        main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "console", "--database", str(db), *args],
            stdin=child,
            stdout=child,
            stderr=child,
            cwd=ROOT,
            env=clean_env(TERM="xterm", **env),
            start_new_session=True,
            preexec_fn=_take_the_terminal,
        )
        os.close(child)
        self.fd = main
        self.output = b""
        self._seen = 0

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def expect(self, text: str, timeout: float = 10) -> bytes:
        """Wait until `text` shows after what was expected before; the output up to it."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while (at := self.output.find(wanted, self._seen)) < 0:
            assert self._read(deadline - time.monotonic()), f"no {text!r} in {self.output!r}"
        start, self._seen = self._seen, at + len(wanted)
        return self.output[start : self._seen]

    def exit_code(self, timeout: float = 5) -> int:
        """Wait for the process to end (reading all it printed); its exit code."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        return self.process.wait(max(deadline - time.monotonic(), 0.1))

    def modes(self) -> int:
        """The terminal's local modes now (a pseudo-terminal's two ends share them)."""
        return int(termios.tcgetattr(self.fd)[3])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)

    def _read(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False at the end or when time is up."""
        if timeout <= 0 or not select.select([self.fd], [], [], timeout)[0]:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child end is closed
            return False
        self.output += data
        return bool(data)


@pytest.fixture
def open_tty(tmp_path: Path) -> Iterator[type[Tty]]:
    opened: list[Tty] = []

    class Opened(Tty):
        def __init__(self, *args: str, **env: str) -> None:
            super().__init__(tmp_path / "console.db", *args, **env)
            opened.append(self)

    yield Opened
    for tty in opened:
        tty.close()


@contextmanager
def slow_model(seconds: float) -> Iterator[dict[str, str]]:
    """A Chat Completions server that answers "Here you go." after `seconds`: the settings
    that point the console at it."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            release.wait(seconds)
            data = json.dumps(completion(body, Reply("Here you go."))).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the console left without waiting
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield {
            "OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1",
            "OPENAI_MODEL": "slow-model",
            "OPENAI_MAX_RETRIES": "0",
        }
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_arrow_keys_edit_and_recall_lines_and_never_become_messages(open_tty: type[Tty]) -> None:
    tty = open_tty("--thread", "keys")
    tty.expect("you> ")
    tty.type(UP + b"\r")  # nothing to recall yet: an empty line, not "[A"
    tty.type(b"hello thee\x1b[Dr\r")  # Left arrow, then a letter: "hello there"
    shown = tty.expect("you> ") + tty.expect("you> ")
    assert b'You said: "hello there"' in shown
    tty.type(UP + b"\r")  # the line above, again
    tty.expect('You said: "hello there"')
    tty.expect("you> ")
    tty.type(CTRL_D)
    tty.expect("Bye. Resume this conversation with: python -m bot console --database")
    assert tty.exit_code() == 0
    assert b"[A" not in tty.output
    assert tty.output.count(b"You said:") == 2


def test_ctrl_c_at_the_prompt_leaves_at_once(open_tty: type[Tty]) -> None:
    tty = open_tty("--thread", "quick")
    tty.expect("you> ")
    tty.type(b"half a line")
    tty.expect("half a line")
    started = time.monotonic()
    tty.type(CTRL_C)
    tty.expect("Bye. Resume this conversation with:")
    assert tty.exit_code() == 130
    assert time.monotonic() - started < 3
    assert b"Traceback" not in tty.output and b"You said" not in tty.output
    assert tty.modes() & (termios.ECHO | termios.ICANON) == termios.ECHO | termios.ICANON


@pytest.mark.parametrize(("key", "code"), [(CTRL_C, 130), (CTRL_D, 0)], ids=["ctrl-c", "ctrl-d"])
def test_ctrl_c_or_ctrl_d_while_the_model_works_leaves_at_once(
    open_tty: type[Tty], tmp_path: Path, key: bytes, code: int
) -> None:
    with slow_model(30) as model:
        tty = open_tty("--thread", "busy", **model)
        tty.expect("you> ")
        tty.type(b"I want to return my order\r")
        tty.expect("Triage is thinking")
        started = time.monotonic()
        tty.type(key)
        before = tty.expect("Bye. Resume this conversation with:")
        assert tty.exit_code() == code
        assert time.monotonic() - started < 3
    assert b"Traceback" not in tty.output
    assert re.search(rb"\r +\r(\x1b\[[0-9;]*m)?$", before.split(b"Bye")[0])  # status erased
    assert tty.modes() & (termios.ECHO | termios.ICANON) == termios.ECHO | termios.ICANON
    stored = subprocess.run(
        [sys.executable, "-m", "bot", "export", "busy", "--database", str(tmp_path / "console.db")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(),
        check=True,
    )
    assert "I want to return my order" in stored.stdout
    log = (tmp_path / "console.log").read_text()
    assert not re.search("WARNING|ERROR", log), log  # the turn was stopped, then the store closed


def test_a_status_line_while_the_model_works_erased_by_the_reply(open_tty: type[Tty]) -> None:
    with slow_model(0.4) as model:
        tty = open_tty("--thread", "status", **model)
        tty.expect("you> ")
        tty.type(b"Where is my parcel?\r")
        tty.expect("Triage is thinking")
        shown = tty.expect("Here you go.")
        tty.expect("you> ")
        tty.type(b"Thanks, I will wait\r")
        tty.expect("Triage is thinking")
        tty.type(b"/quit")  # typed while it works: not echoed over the status line
        tty.expect("you> ")
        tty.expect("/quit")  # ... but waiting in the next prompt
        tty.type(b"\r")
        assert tty.exit_code() == 0
    assert re.search(rb"\r +\r\x1b\[[0-9;]*mTriage\x1b\[0m: Here you go\.", shown)


@pytest.mark.parametrize(
    ("env", "coloured"), [({}, True), ({"NO_COLOR": "1"}, False)], ids=["colour", "no-color"]
)
def test_colour_unless_no_color(open_tty: type[Tty], env: dict[str, str], coloured: bool) -> None:
    tty = open_tty(**env)
    tty.expect("you> ")
    tty.type(b"hello\r")
    tty.expect("You said")
    tty.expect("you> ")
    tty.type(CTRL_D)
    assert tty.exit_code() == 0
    assert bool(COLOUR.search(tty.output)) is coloured
    assert (b"\x1b[1;32m" in tty.output) is coloured  # the prompt, bold green


def test_no_log_line_in_the_chat_they_go_to_a_file(open_tty: type[Tty], tmp_path: Path) -> None:
    tty = open_tty("--thread", "logged", BOT_LOG_LEVEL="INFO")
    tty.expect("you> ")
    tty.type(b"I want to return my order\r")
    tty.expect("you> ")
    tty.type(b"it never arrived, refund me, fraud\r")
    tty.expect("Case #1")
    tty.expect("you> ")
    tty.type(b"/approve 1\r")
    tty.expect("approved")
    tty.expect("you> ")
    tty.type(CTRL_D)
    assert tty.exit_code() == 0
    assert not re.search(rb"INFO|WARNING|bot\.service", tty.output)
    log = (tmp_path / "console.log").read_text()
    assert "case #1 opened (review)" in log
    assert "case #1: approve by console-moderator" in log


async def test_words_print_as_the_model_writes_them(open_tty: type[Tty]) -> None:
    words = " ".join(f"word{i}" for i in range(20))
    async with ChatCompletionsServer(respond=lambda body: Reply(words), token_delay=0.1) as chat:
        tty = open_tty("--thread", "stream", OPENAI_BASE_URL=chat.base_url, OPENAI_MODEL="m")
        await asyncio.to_thread(tty.expect, "you> ")
        tty.type(b"tell me everything\r")
        await asyncio.to_thread(tty.expect, "word3")
        first_seen = time.monotonic()
        await asyncio.to_thread(tty.expect, "word19")
        await asyncio.to_thread(tty.expect, "you> ")
        tty.type(CTRL_D)
        assert await asyncio.to_thread(tty.exit_code) == 0
    assert first_seen < chat.token_times[-1]  # on screen while the model still wrote
    plain = COLOUR.sub(b"", tty.output).decode()
    assert plain.count("word19") == 1  # printed once: the final reply adds nothing
