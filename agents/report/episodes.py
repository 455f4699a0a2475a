"""One episode record turned into what the page shows: a light index entry and a detail loaded on demand.

The index entry (question, grade, boxes, a thumbnail) is what the filterable list needs;
the detail (every view the agent saw, each turn's text, feedback, errors, the entropy
chart, reward terms and grade) is stored as a separate JSON block the page parses only
when the episode is opened. Boxes are in original-image pixels; the page draws them
over the image in SVG with the colours of :func:`medvr_env.render.view_box_colour`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from agents.metrics import VIEW_TOOLS
from medvr_env.render import view_box_colour

from . import svg
from .images import encode, fit
from .records import episode_from_record

_TAG = re.compile(r"<(think|tool_call|answer)>(.*?)(?:</\1>|$)", re.IGNORECASE | re.DOTALL)


def text_segments(raw: str, tool: str | None = None) -> list[list[str]]:
    """``raw`` cut into ``[kind, text]`` pieces for highlighting: ``think``, ``tool_call``, ``answer`` or ``text``.

    Display only (the env's parser decides what an action means). Text with no tags is one
    piece: ``answer`` when the step answered, ``tool_call`` when it called another tool
    (structured actions are recorded as their JSON), else ``text``.
    """
    raw = "" if raw is None else str(raw)
    pieces: list[list[str]] = []
    at = 0
    for match in _TAG.finditer(raw):
        if match.start() > at:
            pieces.append(["text", raw[at:match.start()]])
        pieces.append([match.group(1).lower(), match.group(0)])
        at = match.end()
    if at < len(raw):
        pieces.append(["text", raw[at:]])
    if len(pieces) == 1 and pieces[0][0] == "text" and tool:
        pieces[0][0] = "answer" if tool == "answer" else "think" if tool == "think" else "tool_call"
    return pieces


def entropy_chart(record: dict[str, Any]) -> str:
    """The entropy channel per step (and the tool entropy, when reported); dashed lines mark looks."""
    steps = record.get("steps") or []
    series = [("entropy", [(s["step"], _finite(s.get("entropy"))) for s in steps])]
    if any(_finite(s.get("tool_entropy")) is not None for s in steps):
        series.append(("tool entropy", [(s["step"], _finite(s.get("tool_entropy"))) for s in steps]))
    looks = [s["step"] for s in steps if s.get("new_view") is not None]
    return svg.line_chart(series, title="entropy per step", y_range=(0.0, 1.0), marks=looks, width=300, height=120)


def index_entry(number: int, record: dict[str, Any], *, run: int, source: int, image: int, iou: float | None,
                group: str | None) -> dict[str, Any]:
    """The list's view of one episode (light: no detail, no image; ``image`` numbers its original's thumbnail)."""
    sample = record["sample"]
    grade = record.get("grade") or {}
    steps = record.get("steps") or []
    zooms = sum(1 for v in record["views"][1:] if v.get("tool") in VIEW_TOOLS)
    return {
        "id": number, "run": run, "src": source, "img": image,
        "qtype": sample.get("question_type", ""), "atype": sample.get("answer_type", ""),
        "organ": sample.get("organ", ""), "modality": sample.get("modality", ""),
        "sid": sample.get("sample_id", ""),
        "correct": bool(grade.get("correct")), "zooms": zooms, "steps": len(steps),
        "errors": sum(1 for s in steps if s.get("error")),
        "q": _short(sample.get("question", ""), 200), "ref": _short(sample.get("answer", ""), 80),
        "ans": _short(_last_answer(steps) or "", 80),  # what the agent wrote (the grade keeps its parse)
        "stop": record.get("stop_reason", ""),
        "w": int(record["image_size"][0]), "h": int(record["image_size"][1]),
        "boxes": [[*v["box"], v["index"]] for v in record["views"][1:]],
        "evalb": [[round(float(c), 1) for c in b] for b in sample.get("eval_boxes") or []],
        "iou": None if iou is None else round(iou, 4), "group": group,
    }


def detail(record: dict[str, Any], original: np.ndarray | None, *, view_side: int = 128,
           load_error: str | None = None) -> dict[str, Any]:
    """Everything the opened episode shows, with every view the agent saw as a small image."""
    views = []
    if original is not None:
        episode = episode_from_record(record, original)
        try:
            for view in episode.views:
                w, h = view.size
                scale = min(1.0, view_side / max(w, h))
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                pixels = fit(episode.render_view(view.index, size), view_side)
                views.append(encode(pixels, quality=75).uri)
        except (ValueError, IndexError, TypeError) as exc:  # a record whose views do not fit its image
            load_error = f"view {len(views)} could not be cut from the original: {exc}"
    sample = record["sample"]
    return {
        "sample": {k: sample.get(k) for k in ("sample_id", "question", "options", "answer", "answer_type",
                                              "question_type", "organ", "modality", "split", "image_key")},
        "views": [{"i": v["index"], "tool": v.get("tool"), "step": v.get("step"), "parent": v.get("parent"),
                   "box": v["box"], "size": v.get("size"), "filters": bool(v.get("filters")),
                   "uri": views[k] if k < len(views) else None} for k, v in enumerate(record["views"])],
        "steps": [{"step": s.get("step"), "tool": s.get("tool"), "seg": text_segments(s.get("raw"), s.get("tool")),
                   "error": s.get("error"), "feedback": s.get("feedback") or "", "entropy": s.get("entropy"),
                   "tool_entropy": s.get("tool_entropy"), "source": s.get("entropy_source"),
                   "reward": s.get("reward_terms") or {}, "box": s.get("applied_box"), "new_view": s.get("new_view"),
                   "answer": s.get("answer")} for s in record.get("steps") or []],
        "entropy_svg": entropy_chart(record),
        "grade": record.get("grade"), "stop": record.get("stop_reason", ""),
        "total_reward": record.get("total_reward"), "load_error": load_error,
    }


def box_colours() -> list[str]:
    """The view-box palette as CSS colours: entry ``k`` is ``view_box_colour(k + 1)``, one full cycle."""
    colours = [view_box_colour(1)]
    while len(colours) < 64 and view_box_colour(len(colours) + 1) != colours[0]:
        colours.append(view_box_colour(len(colours) + 1))
    return ["#{:02x}{:02x}{:02x}".format(*c) for c in colours]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _last_answer(steps: list[dict[str, Any]]) -> str | None:
    return next((s.get("answer") for s in reversed(steps) if s.get("answer") is not None), None)


def _short(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["box_colours", "detail", "entropy_chart", "index_entry", "text_segments"]
