"""The conversation service: the one entry point adapters call, and the platform they implement."""

from bot.service.conversation import ConversationService
from bot.service.messages import IncomingMessage, Post, TurnResult
from bot.service.moderation import ACTIONS, Action, ActionResult, CaseCard, Moderation
from bot.service.platform import Click, Platform, Refused
from bot.service.rules import is_end_command
from bot.service.window import WindowBudget

__all__ = [
    "ACTIONS",
    "Action",
    "ActionResult",
    "CaseCard",
    "Click",
    "ConversationService",
    "IncomingMessage",
    "Moderation",
    "Platform",
    "Post",
    "Refused",
    "TurnResult",
    "WindowBudget",
    "is_end_command",
]
