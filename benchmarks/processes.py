"""user_turns_per_s with one and two bot processes on one PostgreSQL database, and on SQLite.

Each process runs the canonical two-turn conversation on its share of the threads, all at once,
with a 50 ms model, through `ConversationService` and the real store. Prints one JSON line per
setup. Needs a PostgreSQL server (BOT_TEST_POSTGRES, default postgresql://postgres@127.0.0.1/test).

Usage: python benchmarks/processes.py [--threads 400] [--latency 0.05]
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
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.turns import WORKFLOW, canonical_reply, conversation  # noqa: E402
from bot.service import ConversationService  # noqa: E402
from bot.store import store_for  # noqa: E402
from bot.testing import ScriptedModel  # noqa: E402

DSN = os.environ.get("BOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def child(database: str, threads: int, offset: int, latency: float) -> None:
    model = ScriptedModel(respond=canonical_reply, latency=latency)
    async with store_for(database) as store:
        service = ConversationService(WORKFLOW, model, store)
        await conversation(service, f"warm-{offset}")
        started = time.perf_counter()
        await asyncio.gather(*(conversation(service, f"p{offset + n}") for n in range(threads)))
        print(json.dumps({"turns": threads * 2, "seconds": time.perf_counter() - started}))


async def run(database: str, processes: int, threads: int, latency: float) -> dict[str, object]:
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
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        for i in range(processes)
    ]
    outputs = [json.loads((await c.communicate())[0]) for c in children]
    turns = sum(o["turns"] for o in outputs)
    wall = max(o["seconds"] for o in outputs)
    return {
        "processes": processes,
        "user_turns": turns,
        "wall_s": round(wall, 3),
        "user_turns_per_s": round(turns / wall, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--child", metavar="DATABASE")
    parser.add_argument("--offset", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        await child(args.child, args.threads, args.offset, args.latency)
        return
    for processes in (1, 2):
        async with fresh_schema() as postgres:
            result = await run(postgres, processes, args.threads, args.latency)
        print(json.dumps({"mode": "processes", "database": "postgresql", **result}), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        result = await run(str(Path(folder) / "bench.db"), 1, args.threads, args.latency)
        print(json.dumps({"mode": "processes", "database": "sqlite", **result}), flush=True)


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A database URL on an empty schema of its own, dropped afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(DSN)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{DSN}?options=-csearch_path%3D{schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
