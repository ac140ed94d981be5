"""The console as a real subprocess on the offline model: hand off, stop, resume with --thread."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def console(db: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return run("-m", "bot", "console", "--database", str(db), *args, stdin=stdin)


def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BOT_"))}
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def test_hand_off_stop_and_resume(tmp_path: Path) -> None:
    db = tmp_path / "console.db"
    # An arrow key that reached the input is no message: that line is ignored, "\x1b[D" dropped.
    first = console(db, "--thread", "shop-1", stdin="\x1b[A\nI want to return my\x1b[D order\n")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("Switchboard console: workflow ecommerce, model: offline demo")
    assert "  ↪ Triage handed you to Returns: The user mentioned order, return." in lines
    assert any(
        line.startswith('Returns: Returns here. You said: "I want to return my order"')
        for line in lines
    )
    assert "offline demo model" in first.stdout and "OPENAI_API_KEY" in first.stdout
    assert lines[-1] == (
        f"Bye. Resume this conversation with: python -m bot console --database {db} --thread shop-1"
    )
    assert "\x1b" not in first.stdout and "[A" not in first.stdout  # plain text in a pipe
    assert first.stderr == ""  # log lines go to a file beside the database
    assert "session console:local:shop-1 opened" in (tmp_path / "console.log").read_text()

    _, *printed = shlex.split(lines[-1].split(": ", 1)[1])  # the command printed, as it is
    resumed = run(*printed, stdin="Order 42\n/end\n")
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    assert "Resuming thread shop-1: Returns, open." in lines
    assert "  you: I want to return my order" in lines
    assert any(line.startswith('Returns: Returns here. You said: "Order 42"') for line in lines)
    assert not any("handed you" in line for line in lines)
    assert "  ! Conversation ended. Your next message to me starts a new one." in lines

    closed = console(db, "--thread", "shop-1", stdin="hello again\n")
    lines = closed.stdout.splitlines()
    assert "Resuming thread shop-1: Returns, closed (type to start a new one)." in lines
    assert any(line.startswith("Triage: Triage here.") for line in lines)

    listing = subprocess.run(
        [sys.executable, "-m", "bot", "sessions", "--database", str(db)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert [(row[1], row[2], row[3], row[4]) for row in rows] == [
        ("console", "shop-1", "Triage", "open"),
        ("console", "shop-1", "Returns", "closed"),
    ]


def test_new_starts_another_thread_and_unknown_commands_show_help(tmp_path: Path) -> None:
    result = console(tmp_path / "c.db", stdin="/help\n/new\nhi\n/quit\nnever read\n")
    lines = result.stdout.splitlines()
    assert any(line.startswith("Commands: /end") for line in lines)
    assert any(line.startswith("  ! New conversation in thread console-") for line in lines)
    assert any(line.startswith("Triage: Triage here.") for line in lines)
    assert "never read" not in result.stdout


def test_a_bad_workflow_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("start: Nobody\nagents:\n  - name: A\n    instructions: hi\n")
    result = console(tmp_path / "c.db", "--workflow", str(bad), stdin="")
    assert result.returncode == 1
    assert result.stderr == (f"error: {bad}: start: unknown agent 'Nobody'. Fix: use one of: A\n")


def test_make_chat_is_told_to_resume_with_make_chat(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    result = console(db, "--from-make", "--thread", "a thread", stdin="")
    expected = f"""make chat ARGS="--database {db} --thread 'a thread'\""""
    assert result.stdout.splitlines()[-1] == f"Bye. Resume this conversation with: {expected}"


def test_verbose_shows_log_lines_on_stderr(tmp_path: Path) -> None:
    result = console(tmp_path / "c.db", "--verbose", "--thread", "v", stdin="hello\n")
    assert "INFO bot.service.conversation: session console:local:v opened" in result.stderr
    assert "INFO" not in result.stdout
    assert not (tmp_path / "console.log").exists()
