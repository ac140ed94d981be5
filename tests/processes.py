"""Running `python -m bot ...` as a real process in tests, with a clean environment."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
_OURS = ("OPENAI_", "BOT_", "SLACK_", "DISCORD_", "PORT")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any Switchboard setting, plus `settings`. A start
    does not wait for redeliveries (`BOT_START_SETTLE_MS=0`, 2 s otherwise) unless a test says
    so: the crash soaks, which kill processes, keep the default. The demo shop is the test's
    own (see `tests/conftest.py`)."""
    own = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    shop = {"BOT_SHOP_DATABASE": os.environ.get("BOT_SHOP_DATABASE", "")}  # the test's own
    return own | {"BOT_START_SETTLE_MS": "0"} | {k: v for k, v in shop.items() if v} | settings


async def bot(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `python -m bot ARGS` in the project root, with pipes for stdin, stdout, stderr."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def started(process: asyncio.subprocess.Process, expected: str) -> None:
    """Wait for the first line of output, which must start with `expected`."""
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
    assert line.startswith(expected), line


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, wait for the exit, and return what the process wrote to stderr."""
    process.terminate()
    _, err = await asyncio.wait_for(process.communicate(), timeout=20)
    return err.decode()
