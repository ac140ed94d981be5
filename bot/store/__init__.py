"""Durable conversations: small protocols by concern, one `Store`, a driver per backend."""

from pathlib import Path

from bot.store.protocols import Cases, Conversations, History, Inbox, Leases, Outbox, SessionStore
from bot.store.sqlite import SQLiteDriver
from bot.store.store import Store
from bot.store.values import Case, Session, SessionKey, Step, StoreError


def sqlite_store(
    path: str | Path,
    *,
    busy_timeout_ms: int = 5000,
    serving: bool = False,
    read_only: bool = False,
) -> Store:
    """The embedded default: one SQLite file (`serving`: by this process alone; `read_only`:
    opened as it is, never created, migrated or written)."""
    driver = SQLiteDriver(
        path, busy_timeout_ms=busy_timeout_ms, serving=serving, read_only=read_only
    )
    return Store(driver)


def postgres_store(
    dsn: str, *, schema: str | None = None, max_size: int = 20, read_only: bool = False
) -> Store:
    """A PostgreSQL database shared by several processes (imports asyncpg only when chosen;
    `read_only`: no table created or migrated, and the server refuses every write)."""
    from bot.store.postgres import PostgresDriver

    return Store(PostgresDriver(dsn, schema=schema, max_size=max_size, read_only=read_only))


def is_postgres(database: str) -> bool:
    """Whether `BOT_DATABASE` names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(("postgresql://", "postgres://"))


def store_for(database: str, *, serving: bool = False, read_only: bool = False) -> Store:
    """PostgreSQL for a `postgresql://` URL (several processes), else a SQLite file, which a
    `serving` process holds alone.

    `read_only` is for commands that only look (`sessions`, `cases`, `export`, `doctor`): the
    database is opened as it is, nothing is created, migrated or written, and a database the bot
    has not set up yet is an `Unmigrated` error saying so.
    """
    if is_postgres(database):
        return postgres_store(database, read_only=read_only)
    return sqlite_store(database, serving=serving, read_only=read_only)


__all__ = [
    "Case",
    "Cases",
    "Conversations",
    "History",
    "Inbox",
    "Leases",
    "Outbox",
    "Session",
    "SessionKey",
    "SessionStore",
    "Step",
    "Store",
    "StoreError",
    "is_postgres",
    "postgres_store",
    "sqlite_store",
    "store_for",
]
