"""``crop``: cut a region of any earlier view at native resolution (shrunk only to fit the image budget)."""

from __future__ import annotations

from typing import Any

from .. import imaging
from ..episode import Episode
from .base import Tool, ToolContext, ToolResult, register_tool
from .zoom import BOX_ARGUMENT, SOURCE_ARGUMENT, region_view


@register_tool
class Crop(Tool):
    name = "crop"
    aliases = ("crop_image",)
    description = "Crop a region of an image at its native resolution, without magnifying it."
    parameters = {
        "type": "object",
        "properties": {"bbox_2d": BOX_ARGUMENT, "source": SOURCE_ARGUMENT},
        "required": ["bbox_2d"],
    }

    def apply(self, episode: Episode, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        box = args["bbox_2d"]
        return region_view(episode, args, self.name, "Cropped", imaging.fit_within(box.width, box.height, ctx.max_view_side))
