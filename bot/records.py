"""The commands that read the store (`sessions`, `cases`, `dead-letters`, `export`, `stats`)
and `migrate`: read-only beside a serving process, a line per row."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from bot.service.export import to_json, to_markdown
from bot.service.moderation import summary
from bot.settings import Settings
from bot.store import Session, Store, store_for
from bot.store.values import Case, DeadLetter

T = TypeVar("T")


class UsageError(Exception):
    """A command was given something it cannot use; the message says what to do."""


def database(settings: Settings, given: str | None) -> str:
    """The database a command reads: `--database`, else `BOT_DATABASE`."""
    return given or settings.bot_database


def _row(session: Session) -> str:
    updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.updated_at))
    tokens = session.prompt_tokens + session.completion_tokens
    return (
        f"{session.id:>5}  {session.key.platform:<8} {session.key.thread:<32} "
        f"{session.active_agent:<14} {session.status:<7} {session.item_count:>5} "
        f"{session.model_calls:>5} {tokens:>8}  {updated}"
    )


def _listing(rows: Sequence[T], empty: str, header: str, line: Callable[[T], str]) -> int:
    """A header and one line per row, or `empty` when there are none."""
    print(header if rows else empty)
    for found in rows:
        print(line(found))
    return 0


async def sessions(settings: Settings, args: argparse.Namespace) -> int:
    async with store_for(database(settings, args.database), read_only=True) as store:
        sessions = await store.list_sessions(args.limit)
    header = (
        f"{'id':>5}  {'platform':<8} {'thread':<32} {'agent':<14} {'status':<7} "
        f"{'items':>5} {'calls':>5} {'tokens':>8}  updated"
    )
    return _listing(sessions, "No conversations stored yet.", header, _row)


async def migrate(source: str, target: str) -> int:
    if not target.startswith(("postgresql://", "postgres://")):
        raise UsageError("--to must be a postgresql:// URL")
    from bot.store.migrate import migrate as copy

    copied = await copy(source, target)
    print(", ".join(f"{count} {table}" for table, count in copied.items()) + " copied.")
    return 0


async def stats(settings: Settings, args: argparse.Namespace) -> int:
    from bot.observe import stats as figures

    if args.days is not None and args.days <= 0:
        raise UsageError("--days must be more than 0")
    since = 0.0 if args.days is None else time.time() - args.days * 86400
    async with store_for(database(settings, args.database), read_only=True) as store:
        found = await figures.collect(store, since, args.workflow)
    if args.json:
        sys.stdout.write(figures.to_json(found))
        return 0
    period = f" in the last {args.days:g} days" if args.days is not None else ""
    about = f" of workflow {args.workflow}" if args.workflow else ""
    sys.stdout.write(figures.to_text(found, f"No conversations{about}{period}."))
    return 0


async def cases(settings: Settings, args: argparse.Namespace) -> int:
    async with store_for(database(settings, args.database), read_only=True) as store:
        cases = await store.cases(status=args.status, limit=args.limit)
    header = f"{'case':>5}  {'status':<9} {'age':>6}  {'moderator':<18} {'thread':<28} about"

    def line(case: Case) -> str:
        return (
            f"{case.id:>5}  {case.status:<9} {_age(case.opened_at):>6}  "
            f"{case.moderator or '-':<18} {case.key!s:<28} {summary(case)}"
        )

    return _listing(cases, "No cases.", header, line)


async def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    async with store_for(database(settings, args.database), read_only=True) as store:
        letters = await store.dead_letters(args.limit)
    header = f"{'post':>6}  {'set aside':>9}  {'kind':<8} {'thread':<36} why"

    def line(letter: DeadLetter) -> str:
        found = (
            f"{letter.id:>6}  {_age(letter.dead_at):>9}  {letter.kind:<8} {letter.key!s:<36} "
            f"{letter.error or ''}"
        )
        return f"{found}\n        {letter.body.get('text', '')}" if args.text else found

    return _listing(letters, "No posts were set aside.", header, line)


def _age(since: float) -> str:
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def export(settings: Settings, args: argparse.Namespace) -> int:
    async with store_for(database(settings, args.database), read_only=True) as store:
        session = await _find(store, args.session)
        entries = await store.entries(session.id)
        calls = await store.model_calls(session.id)
    render = to_json if args.format == "json" else to_markdown
    sys.stdout.write(render(session, entries, calls))
    return 0


async def _find(store: Store, wanted: str) -> Session:
    if wanted.isdigit():
        session = await store.get_session(int(wanted))
        if session is not None:
            return session
    found = await store.find_thread(wanted)
    if len(found) == 1:
        return found[0]
    if found:
        listed = "; ".join(
            f"{s.id} ({s.key}, {s.active_agent}, {s.status}, {_age(s.updated_at)} ago)"
            for s in found
        )
        raise UsageError(
            f"{len(found)} conversations have the thread name {wanted!r}: {listed}; "
            "give the session id of the one you want"
        )
    raise UsageError(
        f"no conversation {wanted!r}; give a session id or a thread name "
        "from `python -m bot sessions`"
    )
