"""``zoom``: cut a region of any earlier view and magnify it to the view size."""

from __future__ import annotations

from typing import Any

from .. import imaging
from ..episode import Episode
from .base import Tool, ToolContext, ToolResult, register_tool

BOX_ARGUMENT = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 4,
    "maxItems": 4,
    "description": "Region [x1, y1, x2, y2] (top-left, bottom-right) on the source view.",
    "x-medvr-role": "box",
}
SOURCE_ARGUMENT = {
    "type": "integer",
    "minimum": 0,
    "description": "Index of the view the box refers to (0 = the original image). Default: the current view.",
    "x-medvr-role": "view",
}


@register_tool
class Zoom(Tool):
    name = "zoom"
    aliases = ("image_zoom_in_tool", "zoom_in")
    description = "Zoom in on a region of an image: crop it and magnify it so small details become visible."
    parameters = {
        "type": "object",
        "properties": {
            "bbox_2d": BOX_ARGUMENT,
            "source": SOURCE_ARGUMENT,
            "label": {"type": "string", "description": "Optional: what you expect to find there."},
        },
        "required": ["bbox_2d"],
    }

    def apply(self, episode: Episode, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        box = args["bbox_2d"]
        return region_view(episode, args, self.name, "Zoomed into", imaging.scale_longest_to(box.width, box.height, ctx.view_size))


def region_view(episode: Episode, args: dict[str, Any], tool: str, verb: str, size: tuple[int, int]) -> ToolResult:
    """Add the view of ``args["bbox_2d"]`` (already in original pixels) cut from ``args["source"]``, at ``size``."""
    box = args["bbox_2d"]
    source = args.get("source", episode.current_view)
    view = episode.add_view(box, size, source, tool, episode.views[source].filters)
    return ToolResult(
        feedback=f"{verb} {box.as_list()} of view {source}: view {view.index} ({size[0]}x{size[1]}).",
        view=view,
        applied_box=box,
    )
