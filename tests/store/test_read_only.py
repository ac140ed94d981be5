"""A read-only store, on both backends: it opens what exists as it is, creates, migrates and
writes nothing, and says plainly when the bot has not set the database up yet."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.store import SessionKey, Store, StoreError, postgres_store, sqlite_store, store_for
from bot.store.sql import migrations
from bot.store.values import Unmigrated
from tests.helpers import open_session
from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

KEY = SessionKey("slack", "C1", "171.5")


@dataclass
class Place:
    """One database location, opened writable or read-only, and a look at what it holds."""

    open: Callable[..., Store]
    where: str
    newest: int
    contents: Callable[[], Awaitable[list[str]]]  # must not change under a read-only store
    age: Callable[[int], Awaitable[None]]  # leave the database at an older schema version


async def _pg_tables(schema: str) -> list[str]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        found = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    return sorted(row[0] for row in found)


def _files(folder: Path) -> list[str]:
    return sorted(str(found.relative_to(folder)) for found in folder.rglob("*"))


@pytest.fixture(params=["sqlite", "postgres"])
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    if request.param == "sqlite":
        path = tmp_path / "data" / "bot.db"

        async def files() -> list[str]:
            return _files(tmp_path)

        async def age(version: int) -> None:
            with sqlite3.connect(path) as db:
                db.execute(f"PRAGMA user_version = {version}")

        newest = migrations("schema.sql")[-1][0]
        yield Place(lambda **kw: sqlite_store(path, **kw), str(path), newest, files, age)
        return
    schema = await postgres_schema()
    assert schema is not None

    async def tables() -> list[str]:
        return await _pg_tables(schema)

    async def age_pg(version: int) -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
        try:
            await conn.execute("DELETE FROM schema_migrations WHERE version > $1", version)
        finally:
            await conn.close()

    yield Place(
        lambda **kw: postgres_store(POSTGRES_DSN, schema=schema, max_size=2, **kw),
        POSTGRES_DSN,
        migrations("schema_postgres.sql")[-1][0],
        tables,
        age_pg,
    )
    await drop_schema(schema)


async def test_nothing_is_created_where_there_is_no_database_yet(place: Place) -> None:
    before = await place.contents()
    with pytest.raises(Unmigrated) as caught:
        async with place.open(read_only=True):
            pass
    assert caught.value.version == 0
    if place.where.endswith(".db"):  # SQLite
        assert str(caught.value) == f"no database at {place.where} yet; it is created on first run"
    else:
        assert str(caught.value).startswith("no Switchboard tables in ")
        assert str(caught.value).endswith(" yet; the bot creates them at start-up")
    assert await place.contents() == before


async def test_a_read_only_store_reads_and_refuses_every_write(place: Place) -> None:
    async with place.open() as store:
        session = await open_session(store, KEY, "shop", "Triage")
    before = await place.contents()
    async with place.open(read_only=True) as store:
        assert store.read_only
        assert [found.id for found in await store.list_sessions()] == [session.id]
        assert await store.count_cases("open") == 0
        with pytest.raises(StoreError):
            await open_session(store, SessionKey("slack", "C1", "other"), "shop", "Triage")
    async with place.open() as store:
        assert [found.id for found in await store.list_sessions()] == [session.id]
    assert await place.contents() == before


async def test_an_older_schema_is_named_and_left_as_it_is(place: Place) -> None:
    async with place.open():
        pass
    await place.age(place.newest - 1)
    for _ in range(2):  # the first read-only open did not migrate it
        with pytest.raises(Unmigrated) as caught:
            async with place.open(read_only=True):
                pass
        assert (caught.value.version, caught.value.newest) == (place.newest - 1, place.newest)
        assert str(caught.value).endswith(
            f": schema {place.newest - 1} of {place.newest} (not migrated yet: the bot migrates "
            "at start-up)"
        )


async def test_a_newer_schema_is_an_error_not_a_missing_migration(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with sqlite_store(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this program's") as caught:
        async with sqlite_store(path, read_only=True):
            pass
    assert not isinstance(caught.value, Unmigrated)


def test_store_for_opens_read_only_on_either_backend() -> None:
    assert store_for("data/x.db", read_only=True).read_only
    assert store_for("postgresql://h/db", read_only=True).read_only
    assert not store_for("data/x.db").read_only
