"""Fixtures shared by every tier: a real SQLite store on a temporary file, and the demo shop's
orders in one of each test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store, sqlite_store


@pytest.fixture(autouse=True)
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo shop's orders in a file of the test's own (the shipped ecommerce workflow
    uses them), for the test's process and the bot processes it starts."""
    path = tmp_path / "shop.db"
    monkeypatch.setenv("BOT_SHOP_DATABASE", str(path))
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "switchboard.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with sqlite_store(db_path) as opened:
        yield opened
