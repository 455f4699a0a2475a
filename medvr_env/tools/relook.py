"""``relook``: look again at the full image, or at an earlier view, at full quality."""

from __future__ import annotations

from typing import Any

from .. import imaging
from ..boxes import Box
from ..episode import Episode
from .base import Tool, ToolContext, ToolResult, register_tool


@register_tool
class Relook(Tool):
    name = "relook"
    aliases = ("re_look", "look_again")
    description = (
        "Look again at the whole original image (no arguments) or at an earlier view, "
        "re-rendered from the original at the highest resolution the image budget allows."
    )
    parameters = {
        "type": "object",
        "properties": {
            "view": {
                "type": "integer",
                "minimum": 0,
                "description": "Index of the earlier view to look at again (default: the original image).",
                "x-medvr-role": "view",
            }
        },
        "required": [],
    }

    def apply(self, episode: Episode, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        target = args.get("view")
        if target is None:
            box, filters = Box.full(*episode.image_size), ()
        else:
            box, filters = episode.views[target].box, episode.views[target].filters
        size = imaging.fit_within(box.width, box.height, ctx.max_view_side)
        view = episode.add_view(box, size, target, self.name, filters)
        what = "the original image" if target is None else f"view {target}"
        return ToolResult(feedback=f"Looking again at {what}: view {view.index} ({size[0]}x{size[1]}).", view=view)
