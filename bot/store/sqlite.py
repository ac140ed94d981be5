"""The SQLite driver: the embedded default, with group commit.

It owns the connection, the schema and the transactions: WAL, foreign keys, explicit
`BEGIN IMMEDIATE ... COMMIT`, and migrations from `schema.sql` tracked by `PRAGMA user_version`.

One thread of its own holds the connection. Callers on the event loop queue operations and wait;
the thread takes everything queued so far as one batch:

1. the reads run first, each on its own (they see what earlier batches committed), and their
   callers are released at once;
2. the writes run in one transaction, each inside a savepoint of its own: a write that fails is
   rolled back alone and its caller alone gets the error;
3. after the COMMIT, every writer of the batch is released, with one wake-up of the event loop.

So a caller goes on only once its step is committed (WAL with `synchronous=NORMAL`, as before:
durable against a crash of the process; `FULL` adds an fsync per commit, which group commit
shares too), and under load one commit serves the steps of many threads. One serving process
per file is enforced with a lock file; read-only commands open the file beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from bot.store.sql import Many, Op, Statement, migrations
from bot.store.values import StoreError, Unmigrated

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_RETRIES = 8
MAX_BATCH = 256  # writes per transaction: bounds how long the first of them waits
SCHEMA = "schema.sql"
Kind = Literal["read", "write", "call"]


@dataclass(eq=False, slots=True)
class _Job:
    """One queued piece of work and the future its caller waits on."""

    kind: Kind
    what: str
    work: Any  # an `Op` (read, write) or a function of the connection (call)
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = field(default=(False, None))  # (failed, result or error)


class SQLiteDriver:
    """Runs store operations on one SQLite file (or `:memory:`), writes grouped in commits."""

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
        self.commits = 0  # transactions committed (benchmarks: writes per commit)
        self.writes = 0  # write operations committed
        self._busy_timeout_ms = busy_timeout_ms
        self._serving = serving and not read_only
        self._lock: int | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None

    @property
    def where(self) -> str:
        """Where the data lives, for messages and logs."""
        return self.path

    async def open(self) -> None:
        """Connect, set the pragmas, and migrate; read-only, connect to the file as it is, which
        must exist (the `Store` closes the driver on failure)."""
        target, uri = self.path, False
        try:
            if self.read_only:
                found = (
                    None
                    if self.path == ":memory:"
                    else await asyncio.to_thread(_existing, self.path)
                )
                if found is None:
                    raise Unmigrated(
                        f"no database at {self.path} yet; it is created on first run",
                        0,
                        self.newest,
                    )
                target, uri = f"{found.as_uri()}?mode=ro", True  # SQLite refuses every write
            elif self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                if self._serving:
                    self._lock = _serve_alone(self.path)
        except OSError as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        thread = threading.Thread(target=self._serve, name=f"sqlite {self.path}", daemon=True)
        self._thread = thread
        thread.start()
        await self._submit("call", f"opening {self.path}", lambda _: self._connect(target, uri))
        await self._submit("call", f"opening {self.path}", self._prepare)

    async def close(self) -> None:
        """Close the connection and let the file go (safe to call twice)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    async def read(self, op: Op[T], what: str) -> T:
        """Run a reading operation."""
        result: T = await self._submit("read", what, op)
        return result

    async def write(self, op: Op[T], what: str) -> T:
        """Run an operation whole, in a transaction it may share with other writes; return once
        it is committed."""
        result: T = await self._submit("write", what, op)
        return result

    async def schema_version(self) -> int:
        """The schema version the database is at."""
        version: int = await self._submit("call", "schema_version", _user_version)
        return version

    async def integrity(self) -> str | None:
        """SQLite's `integrity_check`: "ok", or what is damaged."""
        found: str = await self._submit("call", "integrity_check", _integrity)
        return found

    async def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement, as it is (tests and diagnostics: pragmas, query plans)."""
        rows: list[tuple[Any, ...]] = await self._submit(
            "call", "query", lambda db: db.execute(sql, args).fetchall()
        )
        return rows

    async def _submit(self, kind: Kind, what: str, work: Any) -> Any:
        if self._thread is None:
            if kind != "call":
                _close(work)
            raise StoreError("the store is not open; call open() first")
        future = asyncio.get_running_loop().create_future()
        self._jobs.put(_Job(kind, what, work, future))
        return await future

    # The connection's thread

    def _serve(self) -> None:
        """Take every job queued so far, run it as one batch, release its callers; until
        `close` queues None."""
        stopping = False
        while not stopping:
            jobs = [self._jobs.get()]
            while len(jobs) < MAX_BATCH:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            stopping = None in jobs
            batch = [job for job in jobs if job is not None]
            first = [job for job in batch if job.kind != "write"]
            for job in first:
                job.outcome = self._alone(job)
            _release(first)
            writes = [job for job in batch if job.kind == "write"]
            if writes:
                self._commit(writes)
                _release(writes)
        db, self._db = self._db, None
        if db is not None:
            db.close()
        for job in _drain(self._jobs):  # queued after close: nobody will run them
            job.outcome = (True, StoreError("the store is closed"))
            _release([job])

    def _alone(self, job: _Job) -> tuple[bool, Any]:
        """Run a read or a call outside any transaction."""
        try:
            if job.kind == "call":
                return (False, job.work(self._db))
            return (False, _run(self._connection(), job.work))
        except Exception as exc:
            return (True, _translated(exc, job.what))

    def _commit(self, writes: list[_Job]) -> None:
        """Run `writes` in one transaction, each in a savepoint when there are several; set
        each job's outcome. A lock held by another process is waited for, with backoff, before
        anything ran; a failed COMMIT fails every write of the batch."""
        try:
            db = self._connection()
            self._begin(db, writes[0].what)
        except Exception as exc:
            for job in writes:
                _close(job.work)
                job.outcome = (True, _translated(exc, job.what))
            return
        alone = len(writes) == 1  # the transaction is the write's own: no savepoint needed
        for job in writes:
            job.outcome = _apply(db, job, savepoint=not alone)
            if job.outcome[0] and alone and db.in_transaction:
                db.execute("ROLLBACK")
                return
            if not db.in_transaction:  # SQLite rolled everything back (disk full, I/O error)
                _lost(writes, job)
                return
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for job in writes:
                job.outcome = (True, StoreError(f"{job.what} failed: {exc}"))
            return
        self.commits += 1
        self.writes += sum(1 for job in writes if not job.outcome[0])

    def _begin(self, db: sqlite3.Connection, what: str) -> None:
        for attempt in range(LOCK_RETRIES + 1):
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not ("locked" in str(exc) or "busy" in str(exc)) or attempt == LOCK_RETRIES:
                    raise
                log.warning("store %s: %s (%s); retrying", self.path, exc, what)
                time.sleep(min(0.05 * 2**attempt, 2.0))  # on this thread, not the event loop

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open; call open() first")
        return self._db

    def _connect(self, target: str, uri: bool) -> None:
        try:
            self._db = sqlite3.connect(target, uri=uri, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc

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


def _apply(db: sqlite3.Connection, job: _Job, *, savepoint: bool) -> tuple[bool, Any]:
    """Run one write inside the open transaction; in a savepoint, rolled back alone if it
    fails (without one, the caller rolls the transaction back)."""
    if savepoint:
        db.execute("SAVEPOINT step")
    try:
        result = _run(db, job.work)
    except Exception as exc:
        if savepoint and db.in_transaction:
            db.execute("ROLLBACK TO step")
            db.execute("RELEASE step")
        return (True, _translated(exc, job.what))
    if savepoint:
        db.execute("RELEASE step")
    return (False, result)


def _lost(writes: list[_Job], culprit: _Job) -> None:
    """SQLite ended the transaction on an error: no write of the batch is kept."""
    why = culprit.outcome[1]
    for job in writes:
        if job is not culprit:
            _close(job.work)
            job.outcome = (True, StoreError(f"{job.what} failed: the transaction was lost ({why})"))


def _translated(exc: Exception, what: str) -> Exception:
    """SQLite's errors as `StoreError` naming the operation; the operations' own as they are."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"{what} failed: {exc}")
        error.__cause__ = exc
        return error
    return exc


def _release(jobs: list[_Job]) -> None:
    """Wake each event loop once for all of its jobs."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.future.get_loop(), []).append(job)
    for loop, done in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, done)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.cancelled():
            continue
        failed, value = job.outcome
        if failed:
            job.future.set_exception(value)
        else:
            job.future.set_result(value)


def _drain(jobs: queue.SimpleQueue[_Job | None]) -> list[_Job]:
    left: list[_Job] = []
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return left
        if job is not None:
            left.append(job)


def _close(work: Any) -> None:
    if hasattr(work, "close"):
        work.close()


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
