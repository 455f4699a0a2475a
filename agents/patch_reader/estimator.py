"""PatchReaderEstimator: the env's uncertainty estimator, reading the current view with the patch reader.

It reads the view the policy sees, at the size it sees it (``resolution``: the env's ``obs_size``), so
the reader works at the magnification the view shows: a finding is a 1 px dot on a 128 px first view
and a 3.5-4.7 px shape after a 4x grid zoom. The entropy is the normalised entropy of
:meth:`~agents.patch_reader.reading.Findings.distribution` over the answers that fit the question:
with ``accumulate=True`` (default) over every view the episode has shown so far, combined as the
scripted agents combine them (a spot is judged by the most magnified view that holds it), so the
entropy falls when a zoom lands on what the question asks about; else over the current view only.

Through ``gym.make`` kwargs (an import path, built with no arguments: the cached default reader at 128 px)::

    gym.make("MedVR-VQA-Tensor-v0", uncertainty_estimator="agents.patch_reader.estimator:PatchReaderEstimator")
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from medvr_env.data.procedural import ANSWER_SETS
from medvr_env.episode import Episode

from .reading import Findings, normalised_entropy


class PatchReaderEstimator:
    """Normalised answer entropy of the patch reader on the episode's current view.

    Args:
        reader: A patch-reader checkpoint path, a loaded reader, or ``None`` for the cached default.
        resolution: The side the view is read at; use the env's ``obs_size``.
        cache_size: Views whose readings are kept (keyed by image, box and filters).
        accumulate: Read every view of the episode so far (default), not only the current one.
    """

    def __init__(self, reader: Any = None, resolution: int = 128, cache_size: int = 16384,
                 accumulate: bool = True) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
            raise ValueError(f"resolution must be an integer >= 32, got {resolution!r}")
        if not hasattr(reader, "classify"):
            from .store import load_reader

            reader = load_reader(reader)
        self.reader = reader
        self.resolution = resolution
        self.cache_size = cache_size
        self.accumulate = bool(accumulate)
        self._readings: OrderedDict[tuple, Findings] = OrderedDict()

    def findings(self, episode: Episode) -> Findings:
        """The readings of every view so far (``accumulate``), else of the current view."""
        if not self.accumulate:
            return self.view_findings(episode, episode.current_view)
        combined = Findings()
        for index in range(len(episode.views)):
            found = self.view_findings(episode, index)
            combined.views.extend(found.views)
            combined.readings.extend(found.readings)
        return combined

    def view_findings(self, episode: Episode, index: int) -> Findings:
        """The readings of view ``index`` (cached)."""
        view = episode.views[index]
        key = (episode.sample.image_key, tuple(view.box.as_list()), repr([f.describe() for f in view.filters]))
        found = self._readings.get(key)
        if found is not None:
            self._readings.move_to_end(key)
            return found
        w, h = episode.image_size
        box = [view.box.x1 / w, view.box.y1 / h, view.box.x2 / w, view.box.y2 / h]
        pixels = episode.render_view(index, (self.resolution, self.resolution))
        found = Findings()
        found.add_view(self.reader, pixels, box)
        if self.cache_size:
            self._readings[key] = found
            while len(self._readings) > self.cache_size:
                self._readings.popitem(last=False)
        return found

    def distribution(self, episode: Episode) -> dict[str, float]:
        """The reader's answer probabilities on the current view, over the answers that fit the question."""
        sample = episode.sample
        answers = list(sample.options) or list(ANSWER_SETS.get(sample.question_type, ("yes", "no")))
        return self.findings(episode).distribution(sample.question, answers)

    def estimate(self, episode: Episode) -> float | None:
        return normalised_entropy(self.distribution(episode))

    def __getstate__(self) -> dict[str, Any]:  # workers reload the reader; caches stay behind
        return {"reader": self.reader, "resolution": self.resolution, "cache_size": self.cache_size,
                "accumulate": self.accumulate}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["reader"], state["resolution"], state["cache_size"], state.get("accumulate", True))


__all__ = ["PatchReaderEstimator"]
