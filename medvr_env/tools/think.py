"""``think``: reason in text; the view does not change."""

from __future__ import annotations

from typing import Any

from ..episode import Episode
from .base import Tool, ToolContext, ToolResult, register_tool


@register_tool
class Think(Tool):
    name = "think"
    description = "Write down reasoning. Nothing in the image changes; the episode goes on."
    parameters = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "Your reasoning.", "x-medvr-role": "text"}},
        "required": [],
    }

    def apply(self, episode: Episode, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(feedback="")
