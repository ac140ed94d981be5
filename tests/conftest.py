"""Fixtures shared by every tier: a real SQLite store on a temporary file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store, sqlite_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "switchboard.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with sqlite_store(db_path) as opened:
        yield opened
