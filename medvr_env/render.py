"""Rendering an episode: an RGB panel of every view's box, and a text transcript."""

from __future__ import annotations

import cv2
import numpy as np

from . import imaging
from .episode import Episode

PANEL_HEIGHT = 512
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def view_box_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of view ``index``'s box (``index >= 1``), the same in ``env.render()`` and the HTML report."""
    return _COLOURS[(index - 1) % len(_COLOURS)]


def render_rgb(episode: Episode) -> np.ndarray:
    """The original image with every view's box drawn and numbered, beside the current view."""
    w, h = episode.image_size
    scale = PANEL_HEIGHT / h
    left = imaging.resize(episode.original, (max(1, round(w * scale)), PANEL_HEIGHT))
    left = np.ascontiguousarray(left)
    for view in episode.views[1:]:
        colour = view_box_colour(view.index)
        p1 = (int(view.box.x1 * scale), int(view.box.y1 * scale))
        p2 = (int(view.box.x2 * scale) - 1, int(view.box.y2 * scale) - 1)
        cv2.rectangle(left, p1, p2, colour, 2)
        cv2.putText(left, str(view.index), (p1[0] + 3, p1[1] + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    current = episode.render_view(episode.current_view, (PANEL_HEIGHT, PANEL_HEIGHT))
    current = np.ascontiguousarray(current)
    cv2.putText(
        current, f"view {episode.current_view}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 1, cv2.LINE_AA
    )
    gap = np.zeros((PANEL_HEIGHT, 8, 3), dtype=np.uint8)
    return np.concatenate([left, gap, current], axis=1)


def render_ansi(episode: Episode) -> str:
    """One line for the question, then one line per step."""
    lines = [f"Q: {episode.sample.question}"]
    if episode.sample.options:
        lines.append("   options: " + " | ".join(episode.sample.options))
    for s in episode.steps:
        h = "H=--" if s.entropy is None else f"H={s.entropy:.2f}"
        if s.error:
            what = f"ERROR {s.error['code']}: {s.error['message']}"
        elif s.answer is not None:
            what = f"answer {s.answer!r}"
        elif s.new_view is not None:
            box = f" {s.applied_box}" if s.applied_box else ""
            what = f"{s.tool}{box} -> view {s.new_view}"
        else:
            what = f"{s.tool}"
        reward = sum(s.reward_terms.values())
        lines.append(f"{s.step:>2} {h} r={reward:+.2f} {what}")
    if episode.stop_reason:
        grade = episode.grade or {}
        verdict = "" if not grade else (" correct" if grade.get("correct") else " wrong")
        lines.append(f"end: {episode.stop_reason}{verdict} (reference: {episode.sample.answer!r})")
    return "\n".join(lines) + "\n"
