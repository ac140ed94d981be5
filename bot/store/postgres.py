"""The PostgreSQL driver (asyncpg), for several bot processes sharing one database.

Chosen by `BOT_DATABASE=postgresql://...`. Every write is one transaction on a pooled
connection; inbound-event claims, the outbox and cases are shared through the database, so a
retry delivered to another process is still answered once. The schema is `schema_postgres.sql`,
with the versions applied recorded in `schema_migrations`.

A connection goes back to the pool without asyncpg's reset query (`RESET ALL`, `UNLISTEN *`,
... : one more round trip after every transaction): the store changes no session state, and
asyncpg still rolls back a transaction left open.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from bot.store.sql import Many, Op, Statement, migrations
from bot.store.values import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEMA = "schema_postgres.sql"
_PLACEHOLDER = re.compile(r"\?")
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresDriver:
    """Runs store operations on a PostgreSQL database shared by every bot process."""

    shared = True  # several processes: a thread's turns take a lease in the database

    def __init__(
        self, dsn: str, *, schema: str | None = None, max_size: int = 20, read_only: bool = False
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.max_size = max_size
        self.read_only = read_only
        self.newest = migrations(SCHEMA)[-1][0]
        self._pool: Any = None

    @property
    def where(self) -> str:
        """Where the data lives, without credentials (for messages and logs)."""
        return re.sub(r"//[^@/]*@", "//", self.dsn)

    async def open(self) -> None:
        """Create the pool and migrate the schema; read-only, create the pool only, on sessions
        where the server refuses every write (the `Store` closes the driver on failure)."""
        settings = {"search_path": self.schema} if self.schema else {}
        if self.read_only:
            settings["default_transaction_read_only"] = "on"
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.max_size,
                server_settings=settings,
                reset=_keep,
            )
            if not self.read_only:
                async with self.transaction() as conn:
                    await _migrate(conn)
        except _ERRORS as exc:
            raise StoreError(f"cannot open the database {self.where}: {exc}") from exc
        except ValueError as exc:  # asyncpg's word for a malformed URL
            raise StoreError(f"{self.where} is not a valid database URL ({exc})") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def read(self, op: Op[T], what: str) -> T:
        """Run a reading operation on a pooled connection."""
        return await self._run(op, what, self._acquire)

    async def write(self, op: Op[T], what: str) -> T:
        """Run an operation in one transaction."""
        return await self._run(op, what, self.transaction)

    async def _run(
        self, op: Op[T], what: str, connection: Callable[[], AbstractAsyncContextManager[Any]]
    ) -> T:
        try:
            async with connection() as conn:
                return await _run(conn, op)
        except _ERRORS as exc:
            raise StoreError(f"{what} failed: {_why(exc)}") from exc

    async def schema_version(self) -> int:
        """The newest migration applied; 0 where there are no Switchboard tables yet."""
        try:
            async with self._acquire() as conn:
                if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                    return 0
                return int(
                    await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
                )
        except _ERRORS as exc:
            raise StoreError(f"schema_version failed: {_why(exc)}") from exc

    async def integrity(self) -> str | None:
        """None: PostgreSQL checks its own pages; there is no cheap whole-database check."""
        return None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """One transaction on a pooled connection, for bulk work such as `bot migrate`."""
        async with self._acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreError("the store is not open; call open() first")
        async with self._pool.acquire() as conn:
            yield conn


async def _keep(conn: Any) -> None:
    """What the pool does to a connection given back: nothing (see the module docstring)."""


async def _migrate(conn: Any) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('switchboard-migrate'))")
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "applied_at DOUBLE PRECISION NOT NULL)"
    )
    current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    known = migrations(SCHEMA)
    if current > known[-1][0]:
        raise StoreError(
            f"the database has schema version {current}, newer than this program's "
            f"{known[-1][0]}; upgrade Switchboard"
        )
    for version, script in known:
        if version > current:
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time()
            )
            log.info("postgres schema migrated to version %d", version)


def _why(exc: BaseException) -> str:
    """What went wrong, without the row PostgreSQL quotes in its detail (it holds user text)."""
    if isinstance(exc, asyncpg.PostgresError):
        message = str(getattr(exc, "message", "") or type(exc).__name__).split("\n")[0][:200]
        return f"{message} (SQLSTATE {getattr(exc, 'sqlstate', '?')})"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@functools.lru_cache(maxsize=512)
def _dialect(text: str) -> str:
    """`?` placeholders as asyncpg's `$1`, `$2`, ..."""
    numbers = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", text)


def _storable(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL refuses NUL in text, which SQLite keeps: it becomes U+FFFD. (Model and user
    text are cleaned long before; this is for what is not, such as an error's message.)"""
    if not any(isinstance(arg, str) and "\x00" in arg for arg in args):
        return args
    return tuple(arg.replace("\x00", "\ufffd") if isinstance(arg, str) else arg for arg in args)


async def _execute(conn: Any, statement: Statement) -> Any:
    if isinstance(statement, Many):
        await conn.executemany(_dialect(statement.text), [_storable(r) for r in statement.rows])
        return None
    text, args = _dialect(statement.text), _storable(statement.args)
    if statement.returns == "rows":
        return await conn.fetch(text, *args)
    if statement.returns == "row":
        return await conn.fetchrow(text, *args)
    status = await conn.execute(text, *args)
    return int(status.rsplit(" ", 1)[-1])


async def _run(conn: Any, op: Op[T]) -> T:
    try:
        statement = next(op)
        while True:
            statement = op.send(await _execute(conn, statement))
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        op.close()
