"""Tools: one file per action, all registered through :func:`register_tool`."""

from .base import (
    ROLE_KEY,
    Tool,
    ToolContext,
    ToolResult,
    canonical_tool_name,
    register_tool,
    registered_tools,
    resolve_tool,
    validate_arguments,
)
from .answer import Answer
from .crop import Crop
from .relook import Relook
from .think import Think
from .zoom import Zoom

DEFAULT_TOOLS: tuple[str, ...] = ("think", "zoom", "crop", "relook", "answer")

__all__ = [
    "DEFAULT_TOOLS",
    "ROLE_KEY",
    "Answer",
    "Crop",
    "Relook",
    "Think",
    "Tool",
    "ToolContext",
    "ToolResult",
    "Zoom",
    "canonical_tool_name",
    "register_tool",
    "registered_tools",
    "resolve_tool",
    "validate_arguments",
]
