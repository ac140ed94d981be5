"""Choosing the model from settings: OpenAI (or a compatible server) when configured."""

from __future__ import annotations

from bot.models.base import ChatModel
from bot.models.offline import OfflineModel
from bot.settings import Settings, SettingsError


def make_model(settings: Settings) -> ChatModel:
    """`OpenAIChatModel` with a key or base URL set; else the offline demo model."""
    if settings.has_real_model:
        from bot.models.openai import OpenAIChatModel

        return OpenAIChatModel.from_settings(settings)
    return OfflineModel()


async def close_model(model: ChatModel) -> None:
    """Release a model's connections, if it holds any."""
    aclose = getattr(model, "aclose", None)
    if aclose is not None:
        await aclose()


def model_name(model: ChatModel, settings: Settings) -> str:
    """Which model answers, in a few words, without any secret."""
    if isinstance(model, OfflineModel):
        return "offline demo"
    return f"{settings.openai_model} via {settings.openai_base_url or 'OpenAI'}"


def describe(model: ChatModel, settings: Settings) -> str:
    """One line saying which model answers, and how to use a real one."""
    hint = (
        " (set OPENAI_API_KEY, or OPENAI_BASE_URL for a compatible server, to use a real model)"
        if isinstance(model, OfflineModel)
        else ""
    )
    return f"model: {model_name(model, settings)}{hint}"


def require_real_model(settings: Settings, command: str) -> None:
    """Refuse to serve a chat platform on the offline demo model."""
    if not settings.has_real_model:
        raise SettingsError(
            f"`python -m bot {command}` needs a real model: set OPENAI_API_KEY for OpenAI, or "
            "OPENAI_BASE_URL for an OpenAI-compatible server (Azure OpenAI, Ollama, vLLM, ...)"
        )
