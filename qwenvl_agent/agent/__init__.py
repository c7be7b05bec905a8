"""The document agent: chains the image tools for multi-step questions; ``ask``/``stream`` and their events."""

from .api import AgentError, AgentResult, DocumentAssistant, aask, ask, astream, default_assistant, stream
from .events import Answer, AnswerToken, Error, Event, Step, StepStarted, ToolCall, ToolResult, event_to_dict, trail
from .graph import SYSTEM_PROMPT, build_agent

__all__ = [
    "SYSTEM_PROMPT",
    "AgentError",
    "AgentResult",
    "Answer",
    "AnswerToken",
    "DocumentAssistant",
    "Error",
    "Event",
    "Step",
    "StepStarted",
    "ToolCall",
    "ToolResult",
    "aask",
    "ask",
    "astream",
    "build_agent",
    "default_assistant",
    "event_to_dict",
    "stream",
    "trail",
]
