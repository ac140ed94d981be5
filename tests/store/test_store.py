"""The SQLite store on a real file: schema, atomic appends, dedupe, windows, reopening."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from bot.engine import AgentReply, HandoffRecord, Item, Notice, ToolOutcome, UserTurn
from bot.models import ToolCall
from bot.store import SessionKey, Store, StoreError, sqlite_store
from bot.store.sql import migrations
from bot.store.values import (
    Decision,
    EventId,
    Holder,
    Inbound,
    LeaseLost,
    ModelUsage,
    NewSession,
    Received,
    Step,
    TurnMark,
)
from tests.helpers import append, open_session
from tests.store.conftest import Opener

KEY = SessionKey("console", "local", "t1")


async def test_fresh_database_is_migrated_with_wal_and_foreign_keys(store: Store) -> None:
    assert await store.schema_version() == migrations("schema.sql")[-1][0]
    rows = await store.driver.query("PRAGMA journal_mode")
    assert next(iter(rows))[0] == "wal"
    rows = await store.driver.query("PRAGMA foreign_keys")
    assert next(iter(rows))[0] == 1


async def test_reopen_after_close_gives_the_same_state(opener: Opener) -> None:
    items: list[Item] = [
        UserTurn("I want to return my order", author="ana"),
        AgentReply("Triage", None, (ToolCall("c1", "handoff_to_Returns", "{}"),)),
        ToolOutcome("Triage", "c1", "handoff_to_Returns", "Handed off to Returns."),
        HandoffRecord("Triage", "Returns", "return"),
        AgentReply("Returns", "Which order?"),
    ]
    async with opener() as store:
        version = await store.schema_version()
        session = await open_session(store, KEY, "shop", "Triage")
        await append(store, session.id, items[:1], event=("console", "e1"))
        await append(store, session.id, items[1:], active_agent="Returns")
    async with opener() as store:
        again = await store.find_session(KEY)
        assert again is not None
        assert (again.id, again.active_agent, again.status, again.item_count) == (
            session.id,
            "Returns",
            "open",
            5,
        )
        assert [entry.item for entry in await store.entries(again.id)] == items
        assert [entry.seq for entry in await store.entries(again.id)] == [1, 2, 3, 4, 5]
        assert await store.seen_event(EventId("console", "e1"))
        assert await store.schema_version() == version >= 1


async def test_a_claimed_event_appends_nothing(any_store: Any) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Triage")
    assert await append(store, session.id, [UserTurn("a")], event=("slack", "Ev1")) is not None
    assert await append(store, session.id, [UserTurn("a")], event=("slack", "Ev1")) is None
    assert await append(store, session.id, [UserTurn("b")], event=("discord", "Ev1")) is not None
    stored = await store.get_session(session.id)
    assert stored is not None and stored.item_count == 2


@dataclass(frozen=True, slots=True)
class Bogus:
    """An item the schema refuses, to make a write fail half-way."""

    text: str
    kind: Literal["bogus"] = "bogus"


async def test_a_failed_append_rolls_back_everything(any_store: Any) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Triage")
    with pytest.raises(StoreError, match=r"(?i)commit failed: .*(check constraint|violates)"):
        await append(
            store,
            session.id,
            [UserTurn("kept?"), Bogus("x")],  # type: ignore[list-item]
            active_agent="Returns",
            event=("slack", "Ev9"),
        )
    after = await store.get_session(session.id)
    assert after is not None and (after.item_count, after.active_agent) == (0, "Triage")
    assert await store.entries(session.id) == []
    assert not await store.seen_event(EventId("slack", "Ev9"))
    # The connection is usable afterwards.
    assert await append(store, session.id, [UserTurn("next")], event=("slack", "Ev9"))


async def test_append_to_a_missing_session_fails_cleanly(any_store: Any) -> None:
    store = any_store
    with pytest.raises(StoreError, match="no session 404"):
        await append(store, 404, [UserTurn("x")])


async def test_one_open_session_per_thread_and_new_ones_after_close(any_store: Any) -> None:
    store = any_store
    first = await open_session(store, KEY, "shop", "Triage")
    with pytest.raises(StoreError, match=r"(?i)unique"):
        await open_session(store, KEY, "shop", "Triage")
    await append(store, first.id, [Notice("ended")], status="closed")
    second = await open_session(store, KEY, "shop", "Triage")
    found = await store.find_session(KEY)
    assert found is not None and found.id == second.id and second.id != first.id
    assert [s.id for s in await store.find_thread("t1")] == [second.id, first.id]
    assert [s.id for s in await store.list_sessions()] == [second.id, first.id]


async def test_recent_reads_only_the_window_oldest_first(any_store: Any) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Triage")
    await append(store, session.id, [UserTurn(f"m{i}") for i in range(1, 1001)])
    recent = await store.recent(session.id, 3)
    assert [(e.seq, e.item) for e in recent] == [
        (998, UserTurn("m998")),
        (999, UserTurn("m999")),
        (1000, UserTurn("m1000")),
    ]
    first = await store.first_user_entry(session.id)
    assert first is not None and (first.seq, first.item) == (1, UserTurn("m1"))


async def test_the_window_query_uses_the_primary_key(store: Store) -> None:
    plan = await store.driver.query(
        "EXPLAIN QUERY PLAN SELECT seq, created_at, kind, body FROM items "
        "WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
        (1, 10),
    )
    detail = " ".join(str(row[3]) for row in plan)
    assert "USING PRIMARY KEY" in detail and "TEMP B-TREE" not in detail


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this program's"):
        async with sqlite_store(db_path):
            pass


async def test_using_a_closed_store_is_a_clear_error(db_path: Path) -> None:
    store = sqlite_store(db_path)
    with pytest.raises(StoreError, match="not open; call open"):
        await store.find_session(KEY)


async def test_unicode_and_quotes_survive(any_store: Any) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Triage")
    text = 'Robert\'); DROP TABLE items;-- 🙂 "quoted" \\ \u2028'
    await append(store, session.id, [UserTurn(text)])
    assert (await store.entries(session.id))[0].item == UserTurn(text)


async def test_usage_is_recorded_with_the_reply_and_totalled(any_store: Any) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Triage")
    await append(store, session.id, [UserTurn("hi")])
    await append(
        store,
        session.id,
        [AgentReply("Triage", "Hello")],
        usage=ModelUsage("Triage", "m-1", 120, 8),
    )
    after = await append(
        store, session.id, [AgentReply("Triage", "More")], usage=ModelUsage("Triage", None, 30, 2)
    )
    assert after is not None
    assert (after.model_calls, after.prompt_tokens, after.completion_tokens) == (2, 150, 10)
    calls = await store.model_calls(session.id)
    assert [(c.seq, c.usage) for c in calls] == [
        (2, ModelUsage("Triage", "m-1", 120, 8)),
        (3, ModelUsage("Triage", None, 30, 2)),
    ]


async def test_a_version_1_database_migrates_and_keeps_its_data(db_path: Path) -> None:
    version_1 = migrations("schema.sql")[0][1]
    with sqlite3.connect(db_path) as raw:
        raw.executescript(version_1)
        raw.execute(
            "INSERT INTO sessions (platform, channel, thread, workflow, active_agent, "
            "item_count, created_at, updated_at) VALUES ('slack', 'C', 'T', 'shop', 'Returns', "
            "1, 1.0, 2.0)"
        )
        raw.execute("INSERT INTO items VALUES (1, 1, 'user', NULL, '{\"text\": \"old\"}', 1.0)")
        raw.execute("PRAGMA user_version = 1")
    async with sqlite_store(db_path) as store:
        assert await store.schema_version() == migrations("schema.sql")[-1][0] >= 2
        session = await store.find_session(SessionKey("slack", "C", "T"))
        assert session is not None
        assert (session.active_agent, session.model_calls, session.prompt_tokens) == (
            "Returns",
            0,
            0,
        )
        assert [e.item for e in await store.entries(session.id)] == [UserTurn("old")]


async def test_a_database_locked_by_another_process_is_retried_not_surfaced(
    db_path: Path,
) -> None:
    import asyncio
    import threading

    async with sqlite_store(db_path, busy_timeout_ms=50) as store:
        session = await open_session(store, KEY, "shop", "Triage")
        locked, release = threading.Event(), threading.Event()

        def hold_the_write_lock() -> None:
            other = sqlite3.connect(db_path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(5)
            other.execute("COMMIT")
            other.close()

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        await asyncio.to_thread(locked.wait, 5)
        asyncio.get_running_loop().call_later(0.4, release.set)  # longer than busy_timeout
        stored = await append(store, session.id, [UserTurn("written despite the lock")])
        await asyncio.to_thread(holder.join, 5)
    assert stored is not None and stored.item_count == 1


async def test_cases_and_moderation(any_store: Any) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Fraud")
    await append(store, session.id, [UserTurn("refund!")], open_case=("Fraud", "third claim"))
    case = (await store.cases(session_id=session.id))[0]
    assert (case.key, case.agent, case.reason, case.status) == (KEY, "Fraud", "third claim", "open")
    done = await store.decide(
        Decision(
            case.id,
            "approve",
            "mod-1",
            expect=("open",),
            status="approved",
            holder=Holder("mod-1"),
            items=(Notice("approved"),),
        )
    )
    assert done is not None and (done.status, done.moderator) == ("approved", "mod-1")
    assert await store.decide(Decision(case.id, "approve", "mod-2", expect=("open",))) is None
    assert [(a.action, a.actor) for a in await store.case_actions(case.id)] == [
        ("approve", "mod-1")
    ]
    after = await store.get_session(session.id)
    assert after is not None and after.taken_over_by == "mod-1" and after.item_count == 2
    await store.set_case_card(case.id, '{"ts": "1"}')
    assert (await store.get_case(case.id)).card == '{"ts": "1"}'
    assert [c.id for c in await store.cases(status="approved")] == [case.id]


async def test_the_outbox_keeps_order_marks_each_post_once_and_consumes_placeholders(
    any_store: Any,
) -> None:
    store = any_store
    session = await open_session(store, KEY, "shop", "Triage")
    persona = ["T", None, None]
    posts = (
        {"kind": "working", "text": "…", "agent": None, "persona": persona},
        *({"kind": "reply", "text": f"p{i}", "agent": None, "persona": persona} for i in range(2)),
    )
    step = Step(session.id, items=(AgentReply("Triage", "x"),), posts=posts, turn=TurnMark(7))
    await store.commit(step)
    pending = await store.pending(KEY)
    assert [(o.kind, o.body["text"], o.turn, o.origin) for o in pending] == [
        ("working", "…", 7, store.owner),
        ("reply", "p0", 7, store.owner),
        ("reply", "p1", 7, store.owner),
    ]
    assert pending[1].placeholder is None  # the placeholder is not sent yet
    await store.mark_sent(pending[0], "ts-1", None)
    pending = await store.pending(KEY)
    assert [o.placeholder for o in pending] == ["ts-1", "ts-1"]
    await store.mark_failed(pending[0], "down", 10**12, None)
    head = (await store.pending(KEY))[0]
    assert (head.attempts, head.next_attempt_at) == (1, 10**12)
    assert await store.due_threads(KEY.platform, now=10**11) == []
    assert await store.due_threads(KEY.platform, now=10**13) == [KEY]
    await store.mark_sent((await store.pending(KEY))[0], "ts-2", None)
    assert [o.placeholder for o in await store.pending(KEY)] == [None]  # consumed by p0
    assert await store.last_ref(KEY) == "ts-2"
    assert await store.has_unsent(KEY)
    await store.mark_sent((await store.pending(KEY))[0], "ts-3", None)
    assert not await store.has_unsent(KEY) and await store.pending(KEY) == []


def inbound(text: str, stamp: str, event: str | None = None) -> Inbound:
    return Inbound(KEY, "ana", text, True, stamp, EventId(KEY.platform, event) if event else None)


async def test_the_inbox_stores_before_acknowledging_and_knows_retries(any_store: Any) -> None:
    store = any_store
    first = await store.receive(inbound("hi", "0002", "Ev1"))
    assert first.row is not None and not first.duplicate
    again = await store.receive(inbound("hi", "0002", "Ev1"))
    assert (again.row, again.duplicate, again.owed) == (None, True, True)  # still owed a turn
    earlier = await store.receive(inbound("before", "0001", "Ev0"))
    owed = await store.next_owed(KEY)
    assert owed is not None and owed.id == earlier.row and owed.message.text == "before"
    assert await store.owed_threads("console") == [KEY]
    await store.finish(owed, None)
    owed = await store.next_owed(KEY)
    assert owed is not None and owed.id == first.row
    await store.finish(owed, None)
    assert await store.next_owed(KEY) is None
    retried = await store.receive(inbound("hi", "0002", "Ev1"))
    assert (retried.duplicate, retried.owed) == (True, False)  # answered already


async def test_chatter_outside_the_bots_threads_writes_nothing(any_store: Any) -> None:
    store = any_store
    quiet = Inbound(KEY, "bob", "lunch?", False, "0001", EventId("slack", "Ev5"))
    assert await store.receive(quiet, only_if_held=True) == Received(None)
    assert not await store.seen_event(EventId("slack", "Ev5"))
    await open_session(store, KEY)
    assert (await store.receive(quiet, only_if_held=True)).row is not None


@dataclass(frozen=True)
class Opens:
    """A verdict that opens a conversation with the message."""

    step: Step


async def test_admission_stores_the_message_and_marks_where_its_turn_begins(
    any_store: Any,
) -> None:
    store = any_store
    received = await store.receive(inbound("refund please", "0001", "Ev1"))
    row = await store.next_owed(KEY)
    assert row is not None and row.id == received.row and row.seq is None

    def decide(found: object) -> Opens:
        assert found is None
        turn = TurnMark(row.id, started=True)
        items = (UserTurn("refund please"),)
        return Opens(Step(opens=NewSession(KEY, "shop", "Triage"), items=items, turn=turn))

    admitted = await store.admit(row, None, decide)
    assert admitted.session is not None and admitted.session.item_count == 1
    again = await store.next_owed(KEY)
    assert again is not None and (again.session_id, again.seq) == (admitted.session.id, 1)


async def test_retention_forgets_what_is_done_and_keeps_what_is_owed(any_store: Any) -> None:
    import time

    store = any_store
    session = await open_session(store, KEY)
    posts = [{"kind": "reply", "text": t, "persona": {"name": "Triage"}} for t in ("a", "b")]
    await append(store, session.id, [UserTurn("hi")], event=("console", "Ev1"), posts=posts)
    sent, owed = await store.pending(KEY)
    await store.mark_sent(sent, "ref-a", None)
    answered = await store.receive(inbound("answered", "0001", "Ev2"))
    row = await store.next_owed(KEY)
    assert row is not None and row.id == answered.row
    await store.finish(row, None)
    await store.receive(inbound("still owed", "0002", "Ev3"))

    assert await store.prune(time.time() - 3600) == 0  # nothing is that old yet
    removed = await store.prune(time.time() + 1)
    assert removed == 5  # the sent post, the answered message, three claims
    assert [p.id for p in await store.pending(KEY)] == [owed.id]  # the unsent post stays
    left = await store.next_owed(KEY)
    assert left is not None and left.message.text == "still owed"
    assert [e.item for e in await store.entries(session.id)] == [UserTurn("hi")]


async def test_a_fenced_write_is_refused_once_the_lease_moved_on() -> None:
    import asyncio

    from bot.store import postgres_store
    from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

    schema = await postgres_schema()
    assert schema is not None
    try:
        async with (
            postgres_store(POSTGRES_DSN, schema=schema) as first,
            postgres_store(POSTGRES_DSN, schema=schema) as second,
        ):
            lease = await first.acquire(KEY, ttl=0.2)
            assert lease is not None
            assert await second.acquire(KEY, ttl=5) is None  # held
            session = await open_session(first, KEY)
            assert await first.commit(Step(session.id, items=(Notice("a"),), fence=lease))
            await asyncio.sleep(0.3)  # the first process stalls past its lease
            taken = await second.acquire(KEY, ttl=5)
            assert taken is not None and taken.token > lease.token
            with pytest.raises(LeaseLost):
                await first.commit(Step(session.id, items=(Notice("late"),), fence=lease))
            assert not await first.renew(lease, 5)
            assert await second.commit(Step(session.id, items=(Notice("b"),), fence=taken))
            await second.release(taken)  # let go with its next write, or on its own soon
            for _ in range(500):
                if (again := await first.acquire(KEY, ttl=5)) is not None:
                    break
                await asyncio.sleep(0.01)
            assert again is not None  # free again
            notes = [e.item for e in await first.entries(session.id)]
            assert notes == [Notice("a"), Notice("b")]
    finally:
        await drop_schema(schema)


async def test_work_stops_while_its_lease_still_holds_when_renewals_stall() -> None:
    """The database stalls (the lease table locked): renewals cannot get through, so the
    thread's work is stopped before its lease expires and another process may take it."""
    import asyncio

    import asyncpg

    from bot.service.threads import Threads
    from bot.store import postgres_store
    from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

    schema = await postgres_schema()
    assert schema is not None
    stopped = asyncio.Event()
    left: list[float] = []
    try:
        async with postgres_store(POSTGRES_DSN, schema=schema) as store:
            blocker = await asyncpg.connect(POSTGRES_DSN)
            try:
                held = asyncio.Event()

                async def work(key: SessionKey, fence: object) -> None:
                    held.set()
                    try:
                        await asyncio.sleep(30)
                    except asyncio.CancelledError:
                        remaining = await blocker.fetchval(
                            f"SELECT expires_at - EXTRACT(EPOCH FROM clock_timestamp()) "
                            f'FROM "{schema}".thread_leases'
                        )
                        left.append(float(remaining))
                        stopped.set()
                        raise

                threads = Threads(store, work, lease_s=1.5)
                threads.kick(KEY)
                await asyncio.wait_for(held.wait(), 5)
                stall = blocker.transaction()
                await stall.start()
                await blocker.execute(f'LOCK TABLE "{schema}".thread_leases IN EXCLUSIVE MODE')
                await asyncio.wait_for(stopped.wait(), 5)
                await stall.rollback()
                await threads.settled()
            finally:
                await blocker.close()
    finally:
        await drop_schema(schema)
    assert left and left[0] > 0  # stopped while the lease still held: nobody else ran it yet


async def test_migrate_copies_every_conversation_into_postgres(tmp_path: Path) -> None:
    from bot.cli import main
    from bot.store import postgres_store
    from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

    source = tmp_path / "old.db"
    async with sqlite_store(source) as old:
        session = await open_session(old, KEY, "shop", "Fraud")
        await append(
            old,
            session.id,
            [UserTurn("refund")],
            event=("slack", "Ev1"),
            open_case=("Fraud", "why"),
        )
        await append(
            old,
            session.id,
            [AgentReply("Fraud", "Reviewing.")],
            usage=ModelUsage("Fraud", "m", 10, 2),
            posts=[
                {
                    "kind": "reply",
                    "text": "Reviewing.",
                    "agent": "Fraud",
                    "persona": ["Fraud", None, None],
                }
            ],
        )
    schema = await postgres_schema()
    assert schema is not None
    url = f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
    try:
        import asyncio

        assert await asyncio.to_thread(main, ["migrate", "--from", str(source), "--to", url]) == 0
        async with postgres_store(POSTGRES_DSN, schema=schema) as new:
            moved = await new.find_session(KEY)
            assert moved is not None and moved.id == session.id and moved.model_calls == 1
            assert [e.item for e in await new.entries(moved.id)] == [
                UserTurn("refund"),
                AgentReply("Fraud", "Reviewing."),
            ]
            assert await new.seen_event(EventId("slack", "Ev1"))
            assert [c.reason for c in await new.cases()] == ["why"]
            unsent = await new.unsent(moved.id)
            assert [o.body.get("text") for o in unsent if o.kind != "card"] == ["Reviewing."]
            assert [o.body for o in unsent if o.kind == "card"] == [{"kind": "card", "case": 1}]
            fresh = await open_session(new, SessionKey("x", "y", "z"), "shop", "Triage")
            assert fresh.id > moved.id  # sequences continue after the copied ids
        # A second run refuses to mix into a database that holds conversations.
        assert await asyncio.to_thread(main, ["migrate", "--from", str(source), "--to", url]) == 1
    finally:
        await drop_schema(schema)
