"""Small inline SVG charts (bars, histograms, lines) written directly, so the report needs no plotting library.

Every function returns one ``<svg>`` element as text, with a ``<title>`` for each mark so
hovering shows the exact numbers. Series are ``(name, values)`` pairs; several series are
drawn side by side (bars) or over each other (lines) in :data:`SERIES_COLOURS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

SERIES_COLOURS = ("#3b6fb6", "#e07b39", "#4a9a5b", "#b34a8a", "#7a6bc2", "#a0883a")
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _top(series_count: int) -> int:
    """Room above the plot: the title, and a legend row when there are several series."""
    return 22 if series_count < 2 else 36


def _frame(width: int, height: int, title: str, body: list[str], legend: Sequence[str] = ()) -> str:
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
              f'height="{height}" class="chart" role="img" aria-label="{escape(title)}">'),
             f'<text x="4" y="13" {_FONT} font-weight="600">{escape(title)}</text>']
    if len(legend) > 1:
        x = 4.0
        for i, name in enumerate(legend):
            label = name if len(name) <= 40 else name[:39] + "…"
            parts.append(f'<rect x="{x:.0f}" y="18" width="9" height="9" '
                         f'fill="{SERIES_COLOURS[i % len(SERIES_COLOURS)]}"/>'
                         f'<text x="{x + 12:.0f}" y="26" {_FONT}>{escape(label)}</text>')
            x += 6.2 * len(label) + 24
    return "".join(parts + body + ["</svg>"])


def bar_chart(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, title: str,
              y_max: float | None = None, percent: bool = False, notes: Sequence[Sequence[str]] | None = None,
              width: int = 380, height: int = 210) -> str:
    """Grouped vertical bars: one group per category, one bar per series (``None`` draws nothing).

    Args:
        percent: Values are fractions 0-1, labelled as percentages.
        notes: ``notes[s][c]``: extra hover text for series ``s``, category ``c`` (e.g. ``"n=40"``).
    """
    left, right, top, bottom = 34, 8, _top(len(series)) + 4, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, vals in series for v in vals if v is not None]
    top_value = y_max if y_max is not None else (max(values) if values else 1.0) or 1.0
    body = _y_axis(left, top, plot_w, plot_h, top_value, percent)
    n = max(1, len(categories))
    group_w = plot_w / n
    bar_w = max(1.0, group_w * 0.8 / max(1, len(series)))
    for c, category in enumerate(categories):
        x0 = left + c * group_w + group_w * 0.1
        for s, (name, vals) in enumerate(series):
            value = vals[c] if c < len(vals) else None
            if value is None:
                continue
            h = plot_h * min(1.0, value / top_value) if top_value else 0
            text = f"{category} · {name}: " + (f"{100 * value:.1f}%" if percent else _fmt(value))
            if notes is not None:
                text += f" ({notes[s][c]})"
            body.append(f'<rect x="{x0 + s * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w * 0.92:.1f}" '
                        f'height="{h:.1f}" fill="{SERIES_COLOURS[s % len(SERIES_COLOURS)]}"><title>{escape(text)}'
                        f'</title></rect>')
        if n <= 24 or c % math.ceil(n / 24) == 0:
            label = escape(str(category)[:14])
            cx = left + (c + 0.5) * group_w
            anchor = 'text-anchor="end"' if n > 4 else 'text-anchor="middle"'
            rotate = f' transform="rotate(-35 {cx:.1f} {top + plot_h + 12})"' if n > 4 else ""
            body.append(f'<text x="{cx:.1f}" y="{top + plot_h + 12}" {_FONT} {anchor}{rotate}>{label}</text>')
    return _frame(width, height, title, body, [name for name, _ in series])


def _y_axis(left: int, top: int, plot_w: float, plot_h: float, top_value: float, percent: bool) -> list[str]:
    body = []
    for k in range(5):
        value = top_value * k / 4
        y = top + plot_h - plot_h * k / 4
        label = f"{100 * value:.0f}%" if percent else _fmt(value)
        body.append(f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 3}" y="{y + 3:.1f}" {_FONT} text-anchor="end" fill="#555">{label}</text>')
    return body


def histogram(series: Sequence[tuple[str, Sequence[float]]], edges: Sequence[float], *, title: str,
              labels: Sequence[str] | None = None, width: int = 380, height: int = 210) -> str:
    """Counts of each series' values in the bins ``[edges[i], edges[i+1])`` (the last bin includes its right edge)."""
    counts = []
    for _, values in series:
        row = [0] * (len(edges) - 1)
        for v in values:
            for i in range(len(edges) - 1):
                if edges[i] <= v < edges[i + 1] or (i == len(edges) - 2 and v == edges[-1]):
                    row[i] += 1
                    break
        counts.append(row)
    names = labels or [f"{_fmt(edges[i])}-{_fmt(edges[i + 1])}" for i in range(len(edges) - 1)]
    return bar_chart(names, [(name, row) for (name, _), row in zip(series, counts)], title=title,
                     width=width, height=height)


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float | None]]]], *, title: str,
               y_range: tuple[float, float] | None = None, marks: Sequence[float] = (), width: int = 380,
               height: int = 210, points: bool = True) -> str:
    """Lines through ``(x, y)`` points (``y=None`` breaks the line); ``marks`` are dashed verticals at x values."""
    left, right, top, bottom = 34, 8, _top(len(series)) + 4, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for _, pts in series for x, y in pts if y is not None] + list(marks)
    ys = [y for _, pts in series for _, y in pts if y is not None]
    if not xs or not ys:
        return _frame(width, height, title, [(f'<text x="{width / 2}" y="{height / 2}" {_FONT} '
                                              f'text-anchor="middle" fill="#777">no values</text>')])
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range if y_range is not None else (min(0.0, min(ys)), max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y1 = y0 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (min(max(y, y0), y1) - y0) / (y1 - y0) * plot_h

    body = []
    for k in range(3):
        value = y0 + (y1 - y0) * k / 2
        y = py(value)
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 3}" y="{y + 3:.1f}" {_FONT} text-anchor="end" fill="#555">{_fmt(value)}</text>')
    body.append(f'<text x="{left}" y="{height - 6}" {_FONT} fill="#555">{_fmt(x0)}</text>'
                f'<text x="{left + plot_w}" y="{height - 6}" {_FONT} text-anchor="end" fill="#555">{_fmt(x1)}</text>')
    for m in marks:
        body.append(f'<line x1="{px(m):.1f}" x2="{px(m):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#999" '
                    f'stroke-dasharray="3 3"/>')
    for s, (name, pts) in enumerate(series):
        colour = SERIES_COLOURS[s % len(SERIES_COLOURS)]
        run: list[str] = []
        paths = []
        for x, y in pts:
            if y is None:
                if run:
                    paths.append(run)
                run = []
                continue
            run.append(f"{px(x):.1f},{py(y):.1f}")
            if points and len(pts) <= 40:
                body.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"><title>'
                            f'{escape(name)} at {_fmt(x)}: {_fmt(y)}</title></circle>')
        if run:
            paths.append(run)
        for path in paths:
            body.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
    return _frame(width, height, title, body, [name for name, _ in series])


__all__ = ["SERIES_COLOURS", "bar_chart", "histogram", "line_chart"]
