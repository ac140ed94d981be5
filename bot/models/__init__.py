"""Language models behind the `ChatModel` protocol.

`OpenAIChatModel` lives in `bot.models.openai` and is imported only when chosen, so importing
this package never imports the `openai` library.
"""

from bot.models.base import (
    ChatMessage,
    ChatModel,
    ModelError,
    ModelReply,
    ModelRequest,
    StreamingModel,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from bot.models.offline import OfflineModel

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ModelError",
    "ModelReply",
    "ModelRequest",
    "OfflineModel",
    "StreamingModel",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
]
