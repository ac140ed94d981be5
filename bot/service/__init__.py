"""The conversation service: the one entry point adapters call."""

from bot.service.conversation import ConversationService, WindowBudget
from bot.service.messages import IncomingMessage, Post, TurnResult

__all__ = ["ConversationService", "IncomingMessage", "Post", "TurnResult", "WindowBudget"]
