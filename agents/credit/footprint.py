"""Footprints: where a trajectory zoomed in, as a binary mask over the original image.

A trajectory's footprint is the union of the boxes it applied (``StepRecord.applied_box``,
original-image pixels), read through :meth:`medvr_env.episode.Episode.looks`; tool names
play no part (see :class:`medvr_env.episode.Look` for why ``relook`` adds nothing).
CCA (``docs/reference/method.md`` §3) compares footprints as masks rasterised on a grid.

The grid
--------
``grid`` sets how finely the original image is cut into cells:

- an ``int`` ``n`` (default :data:`DEFAULT_GRID` = 64): ``n × n`` cells, each
  ``width/n × height/n`` original pixels, whatever the image size. All cells have the same
  area, so IoU over cells estimates IoU over pixels, and the cost of a mask is fixed
  (4,096 cells) from a 256-pixel procedural image to a 4,000-pixel pathology slide. On
  a 2,048-pixel image a cell is 32 pixels, about the smallest box the env allows (28).
- a pair ``(columns, rows)``: any other cell count, e.g. ``(w // 8, h // 8)`` for the
  1/8-resolution grid the method reference suggests.
- ``"pixels"``: one cell per original pixel (exact, slow on large images).

A box marks every cell whose centre lies inside it (``x1 <= cx < x2``; so on the
``"pixels"`` grid a box marks exactly its own pixels). A box that contains no cell centre
(smaller than a cell) marks the cell under its own centre, so every look leaves a mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from medvr_env.boxes import Box
from medvr_env.episode import Episode, Look, looks_in_steps

DEFAULT_GRID = 64
"""Default grid: 64 × 64 cells over the original image."""

Grid = Union[int, tuple[int, int], str]
BoxLike = Union[Box, Sequence[float]]
EpisodeLike = Union[Episode, Mapping[str, Any]]


def grid_shape(image_size: tuple[int, int], grid: Grid = DEFAULT_GRID) -> tuple[int, int]:
    """``(rows, columns)`` of the mask for an image of ``image_size = (width, height)``.

    >>> grid_shape((512, 256), 64), grid_shape((512, 256), (16, 8)), grid_shape((512, 256), "pixels")
    ((64, 64), (8, 16), (256, 512))
    """
    width, height = _image_size(image_size)
    if isinstance(grid, str):
        if grid != "pixels":
            raise ValueError(f"grid must be a positive int, a (columns, rows) pair or 'pixels', got {grid!r}")
        return height, width
    if _positive_int(grid):
        return int(grid), int(grid)
    if isinstance(grid, (tuple, list)) and len(grid) == 2 and all(_positive_int(g) for g in grid):
        return int(grid[1]), int(grid[0])
    raise ValueError(f"grid must be a positive int, a (columns, rows) pair or 'pixels', got {grid!r}")


def footprint_mask(boxes: Iterable[BoxLike], image_size: tuple[int, int], grid: Grid = DEFAULT_GRID) -> np.ndarray:
    """The union of ``boxes`` (original pixels, ``x2``/``y2`` exclusive) as a ``bool`` mask of :func:`grid_shape`.

    Boxes are :class:`~medvr_env.boxes.Box` objects or ``[x1, y1, x2, y2]`` lists; an empty
    list gives an all-``False`` mask.

    >>> footprint_mask([[0, 0, 50, 50]], (100, 100), grid=4).astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 0]])
    """
    width, height = _image_size(image_size)
    rows, cols = grid_shape((width, height), grid)
    mask = np.zeros((rows, cols), dtype=bool)
    cx = (np.arange(cols) + 0.5) * (width / cols)  # cell centres in original pixels
    cy = (np.arange(rows) + 0.5) * (height / rows)
    for box in boxes:
        x1, y1, x2, y2 = _coords(box)
        if x2 <= x1 or y2 <= y1:
            continue
        in_x = (cx >= x1) & (cx < x2)
        in_y = (cy >= y1) & (cy < y2)
        if in_x.any() and in_y.any():
            mask[np.ix_(in_y, in_x)] = True
        else:  # smaller than a cell: mark the cell under the box's centre
            col = min(cols - 1, max(0, int((x1 + x2) / 2 / width * cols)))
            row = min(rows - 1, max(0, int((y1 + y2) / 2 / height * rows)))
            mask[row, col] = True
    return mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two boolean masks of one shape; 0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}; rasterise both on the same grid")
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def mask_overlap(part: np.ndarray, whole: np.ndarray) -> float:
    """Share of ``part`` inside ``whole``: ``|part ∩ whole| / |part|``; 0 when ``part`` is empty."""
    if part.shape != whole.shape:
        raise ValueError(f"masks differ in shape: {part.shape} vs {whole.shape}; rasterise both on the same grid")
    size = int(np.count_nonzero(part))
    return int(np.count_nonzero(part & whole)) / size if size else 0.0


@dataclass(frozen=True)
class Footprint:
    """What CCA needs from one finished trajectory, read from an :class:`Episode` or its ``to_dict()`` record.

    Attributes:
        sample_id: The sample's id (``""`` when the record has none).
        image_size: Original image ``(width, height)``.
        looks: Every step that made a new view (see :class:`medvr_env.episode.Look`).
        correct: The grade's ``correct`` flag (``False`` when ungraded, e.g. truncated).
        final_step: ``StepRecord.step`` of the last step (0 when there are none): where a terminal reward goes.
    """

    sample_id: str
    image_size: tuple[int, int]
    looks: tuple[Look, ...]
    correct: bool
    final_step: int = 0

    @property
    def boxes(self) -> list[Box]:
        """The applied boxes: where the trajectory zoomed in."""
        return [look.box for look in self.looks if look.box is not None]

    def mask(self, grid: Grid = DEFAULT_GRID) -> np.ndarray:
        return footprint_mask(self.boxes, self.image_size, grid)


def read_footprint(episode: EpisodeLike) -> Footprint:
    """The :class:`Footprint` of an :class:`Episode` or of its ``to_dict()`` record (a trajectory-log line)."""
    if isinstance(episode, Episode):
        return Footprint(episode.sample.sample_id, episode.image_size, tuple(episode.looks()),
                         bool(episode.grade and episode.grade.get("correct")),
                         episode.steps[-1].step if episode.steps else 0)
    if not isinstance(episode, Mapping):
        raise TypeError(f"expected an Episode or its to_dict() record, got {type(episode).__name__}")
    missing = [key for key in ("image_size", "steps") if key not in episode]
    if missing:
        raise ValueError(f"an episode record needs {missing} (as written by Episode.to_dict()); "
                         f"it has keys {sorted(episode)}")
    sample = episode.get("sample") or {}
    grade = episode.get("grade") or {}
    steps = episode["steps"]
    return Footprint(str(sample.get("sample_id", "")), _image_size(episode["image_size"]),
                     tuple(looks_in_steps(steps)), bool(grade.get("correct")),
                     int(steps[-1]["step"]) if steps else 0)


def episode_footprint(episode: EpisodeLike, grid: Grid = DEFAULT_GRID) -> np.ndarray:
    """The footprint mask of an :class:`Episode` or its ``to_dict()`` record, on ``grid``."""
    return read_footprint(episode).mask(grid)


def _coords(box: BoxLike) -> tuple[float, float, float, float]:
    if isinstance(box, Box):
        return box.x1, box.y1, box.x2, box.y2
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a box is a Box or four numbers [x1, y1, x2, y2] in original pixels, got {box!r}") from None
    return x1, y1, x2, y2


def _image_size(size: Any) -> tuple[int, int]:
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(_positive_int(v) for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"image_size must be (width, height) in positive integer pixels, got {size!r}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


__all__ = [
    "DEFAULT_GRID",
    "Footprint",
    "Grid",
    "episode_footprint",
    "footprint_mask",
    "grid_shape",
    "mask_iou",
    "mask_overlap",
    "read_footprint",
]
