"""The bot on PostgreSQL: the canonical conversation's cost, and one, two and four processes.

Needs a PostgreSQL server (BOT_TEST_POSTGRES, default postgresql://postgres@127.0.0.1/test);
every run gets a schema of its own, dropped afterwards. Prints one JSON line per mode:

1. `turn`: the canonical conversation run N times one after another on PostgreSQL, and on SQLite
   in the same run: `pg_per_conversation_ms` and its ratio to SQLite; per user turn, the
   transactions (`pg_transactions_per_turn`, and without the write that stores the message),
   the round trips (every statement, BEGIN and COMMIT, and any pool reset query), the bot's CPU
   and the database's CPU (its backends' user+system time, read from /proc).
2. `concurrent`: 500 threads at once in one process, model latency 200 ms:
   `pg_user_turns_per_s` and `share_of_ideal`, with CPU per turn.
3. `processes`: 400 threads with a 50 ms model shared by 1, 2 and 4 processes, and SQLite in one
   process: `user_turns_per_s`, and CPU per turn (bot and database). On a 2-core machine more
   processes cannot be faster; the CPU per turn says what separate hosts would give.

Transactions and round trips are counted on asyncpg's connection methods, so the same count
applies to any version of the store. `BENCH_ROOT=/path/to/other/checkout` runs another tree's
`bot` package (before/after in one run).

Usage: python benchmarks/processes.py [--mode turn|concurrent|processes|all]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.turns import WORKFLOW, canonical_reply, conversation
from bot.service import ConversationService
from bot.store import Store, store_for
from bot.testing import ScriptedModel

DSN = os.environ.get("BOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TICK = os.sysconf("SC_CLK_TCK")
COUNTS: Counter[str] = Counter()  # asyncpg calls, by what they were
_IN_RECEIVE = False


def count_round_trips() -> None:
    """Count every statement asyncpg sends (BEGIN, COMMIT and reset queries included)."""
    from asyncpg.connection import Connection  # type: ignore[import-untyped]

    def counted(name: str) -> Any:
        method = getattr(Connection, name)

        async def call(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            COUNTS["round_trips"] += 1
            if _IN_RECEIVE:
                COUNTS["round_trips_receive"] += 1
            if name == "execute" and query.lstrip().upper().startswith("BEGIN"):
                COUNTS["transactions"] += 1
                if _IN_RECEIVE:
                    COUNTS["transactions_receive"] += 1
            return await method(self, query, *args, **kwargs)

        return call

    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
        setattr(Connection, name, counted(name))


def watch_receive(store: Store) -> None:
    """Attribute what `receive` sends (the write that stores a message, before the turn)."""
    receive = store.receive

    async def watched(*args: Any, **kwargs: Any) -> Any:
        global _IN_RECEIVE
        _IN_RECEIVE = True
        try:
            return await receive(*args, **kwargs)
        finally:
            _IN_RECEIVE = False

    store.receive = watched  # type: ignore[method-assign]


async def backend_cpu_s(application: str) -> float:
    """User+system CPU seconds of the PostgreSQL backends serving `application`."""
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application
        )
    finally:
        await conn.close()
    return await asyncio.to_thread(_cpu_s, [pid for (pid,) in pids])


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[tuple[str, str]]:
    """A database URL on an empty schema of its own (dropped afterwards), and the application
    name its connections carry."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(DSN)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{DSN}?options=-csearch_path%3D{schema}&application_name={schema}", schema
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def sequential(
    database: str, conversations: int, application: str | None = None
) -> tuple[float, float, float, int]:
    """Wall, bot CPU and database CPU seconds of `conversations` canonical conversations one
    after another."""
    async with store_for(database) as store:
        watch_receive(store)
        service = ConversationService(WORKFLOW, ScriptedModel(respond=canonical_reply), store)
        for warm in range(20):
            await conversation(service, f"warm-{warm}")
        COUNTS.clear()
        db_cpu = await backend_cpu_s(application) if application else 0.0
        cpu, started = time.process_time(), time.perf_counter()
        for number in range(conversations):
            await conversation(service, f"c{number}")
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        if application:  # the pool's backends are still there
            db_cpu = await backend_cpu_s(application) - db_cpu
        return wall, cpu, db_cpu, conversations * 2


async def turn(conversations: int) -> dict[str, object]:
    count_round_trips()
    async with fresh_schema() as (postgres, application):
        wall, cpu, db_cpu, turns = await sequential(postgres, conversations, application)
        counts = dict(COUNTS)
    with tempfile.TemporaryDirectory() as folder:
        sqlite_wall, _, _, _ = await sequential(str(Path(folder) / "bench.db"), conversations)
    pg_ms = wall / conversations * 1000
    sqlite_ms = sqlite_wall / conversations * 1000
    return {
        "mode": "turn",
        "conversations": conversations,
        "pg_per_conversation_ms": round(pg_ms, 3),
        "sqlite_per_conversation_ms": round(sqlite_ms, 3),
        "pg_over_sqlite": round(pg_ms / sqlite_ms, 2),
        "pg_transactions_per_turn": round(counts.get("transactions", 0) / turns, 2),
        "pg_transactions_per_turn_after_receive": round(
            (counts.get("transactions", 0) - counts.get("transactions_receive", 0)) / turns, 2
        ),
        "pg_round_trips_per_turn": round(counts.get("round_trips", 0) / turns, 2),
        "bot_cpu_ms_per_turn": round(cpu / turns * 1000, 3),
        "db_cpu_ms_per_turn": round(db_cpu / turns * 1000, 3),
    }


async def concurrent(threads: int, latency: float) -> dict[str, object]:
    count_round_trips()
    async with fresh_schema() as (postgres, application):
        model = ScriptedModel(respond=canonical_reply, latency=latency)
        async with store_for(postgres) as store:
            service = ConversationService(WORKFLOW, model, store)
            await conversation(service, "warm")
            COUNTS.clear()
            db_before = await backend_cpu_s(application)
            cpu, started = time.process_time(), time.perf_counter()
            await asyncio.gather(*(conversation(service, f"t{n}") for n in range(threads)))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            db_cpu = await backend_cpu_s(application) - db_before
    turns = threads * 2
    floor = 3 * latency
    return {
        "mode": "concurrent",
        "database": "postgresql",
        "threads": threads,
        "model_latency_ms": latency * 1000,
        "wall_s": round(elapsed, 3),
        "pg_user_turns_per_s": round(turns / elapsed, 1),
        "ceiling_user_turns_per_s": round(turns / floor, 1),
        "share_of_ideal": round(floor / elapsed, 3),
        "pg_transactions_per_turn": round(COUNTS["transactions"] / turns, 2),
        "bot_cpu_ms_per_turn": round(cpu / turns * 1000, 3),
        "db_cpu_ms_per_turn": round(db_cpu / turns * 1000, 3),
    }


async def child(database: str, threads: int, offset: int, latency: float) -> None:
    model = ScriptedModel(respond=canonical_reply, latency=latency)
    async with store_for(database) as store:
        service = ConversationService(WORKFLOW, model, store)
        await conversation(service, f"warm-{offset}")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(conversation(service, f"p{offset + n}") for n in range(threads)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(json.dumps({"turns": threads * 2, "seconds": seconds, "cpu_s": cpu}), flush=True)
        # The pool stays open until told: the parent reads its backends' CPU first.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(
    database: str, processes: int, threads: int, latency: float, application: str | None
) -> dict[str, object]:
    share = threads // processes
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            database,
            "--threads",
            str(share),
            "--offset",
            str(i * share),
            "--latency",
            str(latency),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(processes)
    ]
    for each in children:  # all warmed up and connected: start together
        assert each.stdout is not None
        await each.stdout.readline()
    db_before = await backend_cpu_s(application) if application else 0.0
    for each in children:
        assert each.stdin is not None
        each.stdin.write(b"go\n")
        await each.stdin.drain()
    outputs = []
    for each in children:
        assert each.stdout is not None
        outputs.append(json.loads(await each.stdout.readline()))
    db_cpu = await backend_cpu_s(application) - db_before if application else None
    for each in children:
        assert each.stdin is not None
        each.stdin.write(b"done\n")
        await each.stdin.drain()
        each.stdin.close()
        await each.wait()
    turns = sum(o["turns"] for o in outputs)
    wall = max(o["seconds"] for o in outputs)
    return {
        "processes": processes,
        "user_turns": turns,
        "wall_s": round(wall, 3),
        "user_turns_per_s": round(turns / wall, 1),
        "bot_cpu_ms_per_turn": round(sum(o["cpu_s"] for o in outputs) / turns * 1000, 3),
        "db_cpu_ms_per_turn": None if db_cpu is None else round(db_cpu / turns * 1000, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("turn", "concurrent", "processes", "all"), default="all")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--child", metavar="DATABASE")
    parser.add_argument("--offset", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        await child(args.child, args.threads, args.offset, args.latency)
        return
    if args.mode in ("turn", "all"):
        print(json.dumps(await turn(args.conversations)), flush=True)
    if args.mode in ("concurrent", "all"):
        print(json.dumps(await concurrent(500, 0.2)), flush=True)
    if args.mode in ("processes", "all"):
        for processes in (1, 2, 4):
            async with fresh_schema() as (postgres, application):
                result = await run(postgres, processes, args.threads, args.latency, application)
            result = {"pg_user_turns_per_s": result["user_turns_per_s"], **result}
            print(json.dumps({"mode": "processes", "database": "postgresql", **result}), flush=True)
        with tempfile.TemporaryDirectory() as folder:
            database = str(Path(folder) / "bench.db")
            result = await run(database, 1, args.threads, args.latency, None)
        print(json.dumps({"mode": "processes", "database": "sqlite", **result}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
