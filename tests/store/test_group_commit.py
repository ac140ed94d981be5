"""Group commit on SQLite, and the transactions a turn saves on PostgreSQL.

SQLite: writes queued together share one transaction, each in a savepoint: one that fails is
rolled back alone and only its caller gets the error. PostgreSQL: the write that stores a message
takes its thread's lease, and a thread's last sent mark is written with the lease's release.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

import pytest

from bot.engine import Notice, UserTurn
from bot.store import SessionKey, Store, StoreError, postgres_store
from bot.store.values import EventId, Inbound, Step
from tests.helpers import append, open_session
from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema
from tests.store.test_store import Bogus

KEY = SessionKey("slack", "C1", "171.5")


async def in_one_batch(store: Store, *writes: Awaitable[Any]) -> list[Any]:
    """Run `writes` as one batch: the connection's thread is held until all are queued."""
    held, queued = threading.Event(), threading.Event()

    def hold(_: object) -> None:
        held.set()
        queued.wait(5)

    pause = asyncio.ensure_future(store.driver._submit("call", "pause", hold))  # type: ignore[attr-defined]
    await asyncio.to_thread(held.wait, 5)
    tasks = [asyncio.ensure_future(write) for write in writes]
    await asyncio.sleep(0)  # every task queues its write
    queued.set()
    await pause
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_writes_queued_together_share_one_commit(store: Store) -> None:
    sessions = [await open_session(store, SessionKey("slack", "C1", f"t{n}")) for n in range(20)]
    before = store.driver.commits  # type: ignore[attr-defined]
    results = await in_one_batch(
        store, *(append(store, s.id, [UserTurn(f"hi {s.id}")]) for s in sessions)
    )
    assert [r.item_count for r in results] == [1] * 20
    assert store.driver.commits == before + 1  # type: ignore[attr-defined]
    for session in sessions:
        assert [e.item for e in await store.entries(session.id)] == [UserTurn(f"hi {session.id}")]


async def test_a_write_that_fails_in_a_batch_rolls_back_alone(store: Store) -> None:
    first = await open_session(store, SessionKey("slack", "C1", "a"))
    second = await open_session(store, SessionKey("slack", "C1", "b"))
    kept, failed, missing, also_kept = await in_one_batch(
        store,
        append(store, first.id, [UserTurn("kept")], event=("slack", "E1")),
        append(store, second.id, [UserTurn("lost"), Bogus("x")], event=("slack", "E2")),  # type: ignore[list-item]
        append(store, 404, [UserTurn("nowhere")]),
        append(store, second.id, [UserTurn("kept too")], event=("slack", "E3")),
    )
    assert isinstance(failed, StoreError) and "commit failed" in str(failed)
    assert isinstance(missing, StoreError) and "no session 404" in str(missing)
    assert kept.item_count == 1 and also_kept.item_count == 1
    assert [e.item for e in await store.entries(second.id)] == [UserTurn("kept too")]
    assert not await store.seen_event(EventId("slack", "E2"))  # its event claim went with it
    assert await store.seen_event(EventId("slack", "E1"))
    assert await store.seen_event(EventId("slack", "E3"))


async def test_reads_and_writes_of_a_batch_each_get_their_own_answer(store: Store) -> None:
    session = await open_session(store, KEY)
    found, stored, again = await in_one_batch(
        store,
        store.find_session(KEY),
        append(store, session.id, [Notice("n")]),
        store.get_session(session.id),
    )
    assert found.id == session.id and stored.item_count == 1
    assert again.item_count in (0, 1)  # read beside the write: before or after it, whole


async def test_the_store_closes_with_writes_done_and_refuses_later_ones(store: Store) -> None:
    session = await open_session(store, KEY)
    await append(store, session.id, [Notice("before close")])
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await append(store, session.id, [Notice("after close")])


async def test_the_lease_rides_with_the_message_and_the_last_mark_with_its_release() -> None:
    schema = await postgres_schema()
    assert schema is not None
    try:
        async with (
            postgres_store(POSTGRES_DSN, schema=schema) as mine,
            postgres_store(POSTGRES_DSN, schema=schema) as other,
        ):
            first = await mine.acquire(SessionKey("slack", "C1", "warm"), ttl=5)  # the length
            assert first is not None
            await mine.release(first)
            await mine.receive(Inbound(KEY, "ana", "hi", True, "0001", EventId("slack", "E1")))
            assert await other.acquire(KEY, ttl=5) is None  # taken with the message
            fence = await mine.acquire(KEY, ttl=5)
            assert fence is not None and fence.owner == mine.owner

            session = await open_session(mine, KEY)
            post = {"kind": "reply", "text": "hello", "persona": ["Triage", None, None]}
            await mine.commit(Step(session.id, items=(Notice("x"),), posts=(post,), fence=fence))
            (listed,) = await mine.pending(KEY)
            await mine.mark_sent(listed, "ts-1", fence)
            assert await mine.pending(KEY) == []  # sent, whether or not marked in the database
            await mine.release(fence)
            for _ in range(500):  # let go with this process's next write, or on its own soon
                if (taken := await other.acquire(KEY, ttl=5)) is not None:
                    break
                await asyncio.sleep(0.01)
            assert taken is not None and taken.token > fence.token
            assert await other.pending(KEY) == []  # the mark was written with the release
            assert await other.last_ref(KEY) == "ts-1"
    finally:
        await drop_schema(schema)
