"""The conversation service: the one entry point adapters call."""

from bot.service.conversation import ConversationService, WindowBudget
from bot.service.messages import IncomingMessage, Post, TurnResult
from bot.service.moderation import ActionResult, CaseCard, Moderation

__all__ = [
    "ActionResult",
    "CaseCard",
    "ConversationService",
    "IncomingMessage",
    "Moderation",
    "Post",
    "TurnResult",
    "WindowBudget",
]
