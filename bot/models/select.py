"""Choosing the model from settings: OpenAI (or a compatible server) when configured."""

from __future__ import annotations

from bot.models.base import ChatModel
from bot.models.offline import OfflineModel
from bot.settings import Settings


def make_model(settings: Settings) -> ChatModel:
    """`OpenAIChatModel` with a key or base URL set; else the offline demo model."""
    if settings.has_real_model:
        from bot.models.openai import OpenAIChatModel

        return OpenAIChatModel.from_settings(settings)
    return OfflineModel()


def describe(model: ChatModel, settings: Settings) -> str:
    """One line saying which model answers, without any secret."""
    if isinstance(model, OfflineModel):
        return (
            "model: offline demo (set OPENAI_API_KEY, or OPENAI_BASE_URL for a compatible "
            "server, to use a real model)"
        )
    where = settings.openai_base_url or "OpenAI"
    return f"model: {settings.openai_model} via {where}"
