"""Shared helpers for tests: a small shop workflow in Python, one turn, and stored transcripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.engine import Agent, Event, HandoffBuilder, Item, Persona, Runner, UserTurn, Workflow
from bot.models import ChatModel
from bot.store import Session, SessionKey, Step, Store
from bot.store.values import EventId, ModelUsage, NewCase, NewSession, Status

TRIAGE = Agent("Triage", "Route the customer.", "Greets and routes.", persona=Persona("Triage"))
RETURNS = Agent("Returns", "Handle returns.", "Returns and refunds.", persona=Persona("Returns"))
ORDERS = Agent("Orders", "Handle orders.", "Order status and delivery.")
FRAUD = Agent("Fraud", "Review fraud.", "Fraud review.", review=True)


def shop(**options: object) -> HandoffBuilder:
    """The e-commerce topology of DESIGN, as a builder (call `.build()`)."""
    builder = (
        HandoffBuilder(participants=[TRIAGE, RETURNS, ORDERS, FRAUD], name="shop")
        .with_start_agent(TRIAGE)
        .add_handoff(TRIAGE, [RETURNS, ORDERS])
        .add_handoff(RETURNS, [ORDERS, TRIAGE])
        .add_handoff(ORDERS, [RETURNS, TRIAGE])
        .add_handoff(RETURNS, [FRAUD], description="Suspected return fraud or abuse.")
    )
    if "return_to_previous" in options:
        builder.enable_return_to_previous(bool(options["return_to_previous"]))
    return builder


async def run_turn(
    workflow: Workflow,
    model: ChatModel,
    text: str,
    *,
    history: Sequence[Item] = (),
    active: str | None = None,
) -> tuple[list[Event], list[Item]]:
    """Run one user turn; return its events and the transcript after it."""
    items: list[Item] = [*history, UserTurn(text)]
    events: list[Event] = []
    async for event in Runner(workflow, model).run(items, active):
        events.append(event)
        items.extend(event.records)
    return events, items


def kinds(events: Sequence[Event]) -> list[str]:
    """Event class names, to compare a turn's shape at a glance (`Writing`, the text as it is
    written, left out: tests of streaming look at it on their own)."""
    return [type(event).__name__ for event in events if type(event).__name__ != "Writing"]


async def open_session(
    store: Store, key: SessionKey, workflow: str = "shop", agent: str = "Triage"
) -> Session:
    """A new open conversation in `key`."""
    session = await store.commit(Step(opens=NewSession(key, workflow, agent)))
    assert session is not None
    return session


async def append(
    store: Store,
    session_id: int,
    items: Sequence[Item],
    *,
    active_agent: str | None = None,
    status: Status | None = None,
    event: tuple[str, str] | None = None,
    usage: ModelUsage | None = None,
    open_case: tuple[str, str | None] | None = None,
    posts: Sequence[dict[str, Any]] = (),
) -> Session | None:
    """One `Step` written with keyword arguments, for tests that build transcripts by hand."""
    return await store.commit(
        Step(
            session_id,
            event=EventId(*event) if event else None,
            items=tuple(items),
            agent=active_agent,
            status=status,
            usage=usage,
            cases=(NewCase(*open_case),) if open_case else (),
            posts=tuple(posts),
        )
    )
