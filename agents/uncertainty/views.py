"""Which views of a sample the reader is trained on, computed exactly as the env's grid zooms compute them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medvr_env import imaging
from medvr_env.boxes import Box, box_from_agent
from medvr_env.wrappers.sb3_actions import grid_regions


@dataclass(frozen=True)
class ViewSpec:
    """A view of the original: its box in original pixels and its zoom depth (0 = the whole image)."""

    box: Box
    depth: int

    def fractions(self, image_size: tuple[int, int]) -> list[float]:
        """The box as ``[x1, y1, x2, y2]`` fractions of the original (the env's ``view_box``)."""
        w, h = image_size
        return [self.box.x1 / w, self.box.y1 / h, self.box.x2 / w, self.box.y2 / h]


def grid_children(parent: Box, image_size: tuple[int, int], grid: int = 2, min_side: int = 28) -> list[Box]:
    """The boxes a ``grid`` zoom on view ``parent`` produces (the same arithmetic as the env's)."""
    return [
        box_from_agent([float(v) for v in cell], view_box=parent, view_size=(parent.width, parent.height),
                       bbox_format="norm", image_size=image_size, min_side=min_side)
        for cell in grid_regions(grid)
    ]


def training_views(image_size: tuple[int, int], rng: np.random.Generator, deep_views: int = 2,
                   grid: int = 2) -> list[ViewSpec]:
    """The whole image, every grid cell of it (depth 1) and ``deep_views`` random depth-2 cells.

    The choice never looks at where the findings are: the reader is trained on
    questions and answers only.
    """
    full = Box.full(*image_size)
    views = [ViewSpec(full, 0)]
    children = grid_children(full, image_size, grid)
    views.extend(ViewSpec(b, 1) for b in children)
    pairs = [(i, j) for i in range(len(children)) for j in range(grid * grid)]
    for k in rng.choice(len(pairs), size=min(deep_views, len(pairs)), replace=False):
        i, j = pairs[int(k)]
        views.append(ViewSpec(grid_children(children[i], image_size, grid)[j], 2))
    return views


def render(original: np.ndarray, box: Box, resolution: int) -> np.ndarray:
    """The view's pixels at ``resolution`` x ``resolution``, as ``Episode.render_view`` makes them."""
    return imaging.resize(imaging.region(original, box), (resolution, resolution))


__all__ = ["ViewSpec", "grid_children", "render", "training_views"]
