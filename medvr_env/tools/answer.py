"""``answer``: give the final answer; ends the episode and is graded."""

from __future__ import annotations

from typing import Any

from ..episode import Episode
from .base import Tool, ToolContext, ToolResult, register_tool


@register_tool
class Answer(Tool):
    name = "answer"
    aliases = ("final_answer",)
    terminal = True
    description = "Give the final answer to the question (an option letter for multiple choice). Ends the episode."
    parameters = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The answer.", "x-medvr-role": "text"}},
        "required": ["text"],
    }

    def apply(self, episode: Episode, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(feedback="", answer=args["text"].strip())
