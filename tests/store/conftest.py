"""The store suite runs on both backends: SQLite on a file, and PostgreSQL on 127.0.0.1:5432.

Each PostgreSQL test gets a schema of its own. Without a reachable server those tests are skipped
with the reason shown; `BOT_REQUIRE_POSTGRES=1` (set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from bot.store import sqlite_store

POSTGRES_DSN = os.environ.get("BOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def postgres_schema() -> str | None:
    """A fresh schema on the test server, or None (skip) when there is no server."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"no PostgreSQL at {POSTGRES_DSN} ({type(exc).__name__}); set BOT_TEST_POSTGRES"
        if os.environ.get("BOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    return name


async def drop_schema(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


Opener = Callable[[], AbstractAsyncContextManager[Any]]


@pytest.fixture(params=["sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the same store location again and again (to test reopening)."""
    if request.param == "sqlite":
        yield lambda: sqlite_store(tmp_path / "store.db")
        return
    from bot.store import postgres_store

    schema = await postgres_schema()
    assert schema is not None
    yield lambda: postgres_store(POSTGRES_DSN, schema=schema, max_size=4)
    await drop_schema(schema)


@pytest.fixture
async def any_store(opener: Opener) -> AsyncIterator[Any]:
    async with opener() as opened:
        yield opened
