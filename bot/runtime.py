"""Wiring from settings: the workflow, the model and the store behind one service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.engine.loader import load_workflow
from bot.models.base import ChatModel
from bot.models.select import close_model, make_model
from bot.service import ConversationService, WindowBudget
from bot.settings import Settings
from bot.store import SQLiteStore


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    workflow: Path | None = None,
    database: str | None = None,
    model: ChatModel | None = None,
) -> AsyncIterator[ConversationService]:
    """A `ConversationService` on the configured workflow, model and database; closed after."""
    loaded = load_workflow(workflow or settings.bot_workflow)
    chosen = model or make_model(settings)
    try:
        async with SQLiteStore(database or settings.bot_database) as store:
            yield ConversationService(
                loaded,
                chosen,
                store,
                window=WindowBudget(settings.bot_window_items, settings.bot_window_tokens),
                show_handoffs=settings.bot_show_handoffs,
            )
    finally:
        await close_model(chosen)
