"""The SQLite driver: the embedded default, on aiosqlite.

It owns the connection, the schema and the transactions: WAL, foreign keys, `BEGIN IMMEDIATE ...
COMMIT` for every write, and migrations from `schema.sql` tracked by `PRAGMA user_version`. An
operation runs whole on aiosqlite's connection thread: one thread hop per operation instead of
one per statement (which cost ~35 hops and ~5 ms per conversation), and no two operations
interleave, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.store.sql import Many, Op, Statement, migrations
from bot.store.values import StoreError, Unmigrated

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_RETRIES = 8
SCHEMA = "schema.sql"


class SQLiteDriver:
    """Runs store operations on one SQLite file (or `:memory:`)."""

    shared = False  # one serving process per file: its lanes already order each thread

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        serving: bool = False,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.newest = migrations(SCHEMA)[-1][0]
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._serving = serving and not read_only
        self._lock: int | None = None

    @property
    def where(self) -> str:
        """Where the data lives, for messages and logs."""
        return self.path

    async def open(self) -> None:
        """Connect, set the pragmas, and migrate; read-only, connect to the file as it is, which
        must exist (the `Store` closes the driver on failure)."""
        try:
            if self.read_only:
                self._db = await self._connect_read_only()
            else:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    if self._serving:
                        self._lock = _serve_alone(self.path)
                self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        await self._call(f"opening {self.path}", self._prepare)

    async def _connect_read_only(self) -> aiosqlite.Connection:
        """The file opened read-only (`mode=ro`): no directory, file or schema is created, and
        SQLite itself refuses every write."""
        found = None if self.path == ":memory:" else await asyncio.to_thread(_existing, self.path)
        if found is None:
            raise Unmigrated(
                f"no database at {self.path} yet; it is created on first run", 0, self.newest
            )
        return await aiosqlite.connect(f"{found.as_uri()}?mode=ro", uri=True, isolation_level=None)

    async def close(self) -> None:
        """Close the connection and let the file go (safe to call twice)."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    async def read(self, op: Op[T], what: str) -> T:
        """Run a reading operation."""
        return await self._call(what, _run, op)

    async def write(self, op: Op[T], what: str) -> T:
        """Run an operation in one transaction, rolled back on any error."""
        return await self._call(what, _transaction, op)

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        return await self._call("schema_version", _user_version)

    async def integrity(self) -> str | None:
        """SQLite's `integrity_check`: "ok", or what is damaged."""
        return await self._call("integrity_check", _integrity)

    @property
    def connection(self) -> aiosqlite.Connection:
        """The aiosqlite connection (tests and diagnostics only)."""
        if self._db is None:
            raise StoreError("the store is not open; call open() first")
        return self._db

    async def _call(self, what: str, work: Any, *args: Any) -> T:
        """Run `work(connection, *args)` on the connection thread; translate SQLite errors.

        A write lock held by another process beyond the busy timeout is waited for again, with
        backoff: `BEGIN IMMEDIATE` is where it shows, before the operation has run at all.
        """
        db = self.connection
        for attempt in range(LOCK_RETRIES + 1):
            try:
                # aiosqlite runs queued functions on its thread; `_execute` is how its own
                # methods queue one. Pinned below 0.23 in pyproject; store tests use every path.
                result: T = await db._execute(lambda: work(db._conn, *args))  # type: ignore[no-untyped-call]
            except _Busy as exc:
                if attempt == LOCK_RETRIES:
                    raise StoreError(f"{what} failed: {exc}") from exc
                log.warning("store %s: %s (%s); retrying", self.path, exc, what)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
            except sqlite3.Error as exc:
                raise StoreError(f"{what} failed: {exc}") from exc
            else:
                return result
        raise AssertionError("unreachable")

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        if self.read_only:
            db.execute("PRAGMA query_only = ON")
            _user_version(db)  # reads the file: one that is not a database fails here
            return
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        current = _user_version(db)
        known = migrations(SCHEMA)
        newest = known[-1][0]
        if current > newest:
            raise StoreError(
                f"the database {self.path} has schema version {current}, newer than this "
                f"program's {newest}; upgrade Switchboard or use another database file"
            )
        for version, script in known:
            if version > current:
                try:
                    db.executescript(
                        f"BEGIN IMMEDIATE;{script};PRAGMA user_version = {int(version)};COMMIT;"
                    )
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                log.info("store %s migrated to schema version %d", self.path, version)


def _existing(path: str) -> Path | None:
    """The file's absolute path if it exists (blocking: run on a thread)."""
    found = Path(path).absolute()
    if found.is_dir():
        raise StoreError(f"{path} is a folder, not a SQLite file: name a file in it")
    return found if found.exists() else None


def _serve_alone(path: str) -> int:
    """Hold `<file>.serving` locked while serving: a second process on the file is refused.

    The lock goes with the process, however it ends (`kill -9` included). Read-only commands
    (`sessions`, `export`, `cases`, `doctor`) take no lock and work beside a serving process.
    """
    lock_path = f"{path}.serving"
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(handle)
        raise StoreError(
            f"{path} is already served by {holder}: one serving process per SQLite file. Stop "
            "it, or set BOT_DATABASE=postgresql://... to run several processes"
        ) from None
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"process {os.getpid()}".encode(), 0)
    return handle


class _Busy(Exception):
    """Another process holds the write lock: nothing ran, so the write can be tried again."""


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _integrity(db: sqlite3.Connection) -> str:
    return "; ".join(str(found[0]) for found in db.execute("PRAGMA integrity_check"))


@functools.lru_cache(maxsize=512)
def _dialect(text: str) -> str:
    """One writer per file: SQLite takes the write lock at `BEGIN IMMEDIATE`, not per row."""
    return text.replace(" FOR UPDATE", "")


def _execute(db: sqlite3.Connection, statement: Statement) -> Any:
    if isinstance(statement, Many):
        db.executemany(_dialect(statement.text), statement.rows)
        return None
    cursor = db.execute(_dialect(statement.text), statement.args)
    if statement.returns == "rows":
        return cursor.fetchall()
    if statement.returns == "row":
        return cursor.fetchone()
    return cursor.rowcount


def _run(db: sqlite3.Connection, op: Op[T]) -> T:
    try:
        statement = next(op)
        while True:
            statement = op.send(_execute(db, statement))
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        op.close()


def _transaction(db: sqlite3.Connection, op: Op[T]) -> T:
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise _Busy(str(exc)) from exc  # `op` has not started: it can run on a retry
        raise
    try:
        result = _run(db, op)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result
