"""Pixels for the report: originals from the run's dataset, views cut like the env cuts them, as small data URIs.

Trajectory records hold no pixels. The original of an episode is loaded again from the
dataset the run used (its env id and kwargs, from the run's metadata) with
``dataset.load_image(sample)``; views are cut from it with :meth:`Episode.render_view`,
so the report shows what the agent saw. When the dataset cannot be opened (moved, not
installed), the report still draws every box on a grey stand-in and says why.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from medvr_env import imaging

from .records import TrajectorySource, sample_from_dict

# env kwargs that matter for the policy, not for the pixels (and may import heavy code)
_NOT_FOR_PIXELS = ("uncertainty_estimator",)


@dataclass(frozen=True)
class Encoded:
    """An encoded image: a ``data:`` URI and the size it was encoded at."""

    uri: str
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.uri)


def encode(pixels: np.ndarray, *, quality: int = 72, png: bool = False) -> Encoded:
    """``pixels`` (H, W, 3 uint8) as a JPEG (or PNG) data URI; grey images are stored with one channel."""
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[2] == 3 and _is_grey(array):
        array = array[:, :, 0]
    image = Image.fromarray(np.ascontiguousarray(array))
    buffer = io.BytesIO()
    if png:
        image.save(buffer, format="PNG", optimize=True)
    else:
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    mime = "png" if png else "jpeg"
    return Encoded(f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}",
                   image.width, image.height)


def _is_grey(array: np.ndarray) -> bool:
    step = max(1, array.shape[0] // 64)  # a sample of rows is enough to tell
    rows = array[::step]
    return bool(np.array_equal(rows[:, :, 0], rows[:, :, 1]) and np.array_equal(rows[:, :, 0], rows[:, :, 2]))


def fit(pixels: np.ndarray, side: int) -> np.ndarray:
    """``pixels`` scaled so that the longer side is at most ``side`` (never enlarged)."""
    h, w = pixels.shape[:2]
    size = imaging.fit_within(w, h, side)
    return pixels if size == (w, h) else imaging.resize(pixels, size)


def placeholder(width: int, height: int, side: int) -> np.ndarray:
    """A grey stand-in with the original's aspect ratio, for originals that cannot be loaded."""
    w, h = imaging.fit_within(width, height, side) if max(width, height) > side else (width, height)
    return np.full((max(1, h), max(1, w), 3), 96, dtype=np.uint8)


class ImageLoader:
    """Loads originals for the episodes of one trajectory source from the dataset its run used.

    The dataset is opened lazily, once; a failure is remembered (``error``) and every
    later request returns ``None`` so the report falls back to stand-ins.
    """

    def __init__(self, source: TrajectorySource, data_root: str | None = None) -> None:
        self.source = source
        self.data_root = data_root
        self.error: str | None = None
        self._dataset: Any = None

    def load(self, sample: dict[str, Any], size: tuple[int, int]) -> np.ndarray | None:
        """The original image of ``sample`` (a record's ``sample`` dict), or ``None`` (see ``error``).

        ``size`` is the ``(width, height)`` the record says the agent saw; an image of another
        size (the dataset changed since the run) is refused, since the record's boxes would not fit it.
        """
        dataset = self._open(sample)
        if dataset is None:
            return None
        try:
            pixels = dataset.load_image(sample_from_dict(sample))
        except Exception as exc:  # one unreadable image must not cost the whole report
            self.error = f"image {sample.get('image_key')!r}: {type(exc).__name__}: {exc}"
            return None
        found = (int(pixels.shape[1]), int(pixels.shape[0]))
        if found != tuple(size):
            self.error = (f"image {sample.get('image_key')!r} is {found[0]}x{found[1]} now but was "
                          f"{size[0]}x{size[1]} in the run (the dataset changed?)")
            return None
        return pixels

    def _open(self, sample: dict[str, Any]) -> Any:
        if self._dataset is not None or self.error is not None:
            return self._dataset
        try:
            self._dataset = self._make_dataset(sample)
        except Exception as exc:
            self.error = f"could not open the run's dataset ({type(exc).__name__}: {exc})"
        return self._dataset

    def _make_dataset(self, sample: dict[str, Any]) -> Any:
        import gymnasium as gym

        import medvr_env  # noqa: F401  (registers the ids)

        kwargs = {k: v for k, v in self.source.env_kwargs.items() if k not in _NOT_FOR_PIXELS}
        if self.data_root:
            kwargs["data_root"] = self.data_root
        env_id = self.source.env_id
        if env_id is None or env_id not in gym.registry:
            if not str(sample.get("image_key", "")).startswith("procedural/"):
                raise ValueError("the run does not say which env it used (no summary.json/results.json); "
                                 "pass --env ID and --data-root")
            env_id = "MedVR-VQA-v0"  # procedural keys carry everything needed to redraw the image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gym.make(env_id, **kwargs)
        try:
            return env.unwrapped.dataset
        finally:
            env.close()


__all__ = ["Encoded", "ImageLoader", "encode", "fit", "placeholder"]
