"""The handoff engine: agents, the declared graph, and the runner of one user turn.

Pure logic: it imports nothing of Slack, Discord, SQL or the openai package.
"""

from bot.engine.agents import Agent, Persona
from bot.engine.errors import EngineError, Problem, WorkflowError
from bot.engine.events import (
    AgentMessage,
    ApprovalAsked,
    AwaitingUser,
    Closed,
    Continued,
    Event,
    Guarded,
    HandoffSent,
    ModelCalled,
    ToolCalled,
    TurnStopped,
    Writing,
)
from bot.engine.handoffs import Edge, HandoffTool, handoff_tool_name
from bot.engine.runner import Runner
from bot.engine.tools import FunctionTool, function_tool
from bot.engine.transcript import (
    AgentReply,
    ContinuationPrompt,
    HandoffRecord,
    Item,
    Notice,
    ToolOutcome,
    UserTurn,
    view_for,
)
from bot.engine.workflow import HandoffBuilder, Limits, SequentialBuilder, Workflow

__all__ = [
    "Agent",
    "AgentMessage",
    "AgentReply",
    "ApprovalAsked",
    "AwaitingUser",
    "Closed",
    "ContinuationPrompt",
    "Continued",
    "Edge",
    "EngineError",
    "Event",
    "FunctionTool",
    "Guarded",
    "HandoffBuilder",
    "HandoffRecord",
    "HandoffSent",
    "HandoffTool",
    "Item",
    "Limits",
    "ModelCalled",
    "Notice",
    "Persona",
    "Problem",
    "Runner",
    "SequentialBuilder",
    "ToolCalled",
    "ToolOutcome",
    "TurnStopped",
    "UserTurn",
    "Workflow",
    "WorkflowError",
    "Writing",
    "function_tool",
    "handoff_tool_name",
    "view_for",
]
