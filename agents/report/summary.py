"""The report's summary: the run's numbers (the same :class:`~agents.metrics.MetricTally` ``medvr eval`` uses) and plots.

Statistics are streamed over every record of the run, however many episodes the
report shows. Besides the tally, each source keeps the few distributions the plots need:
zooms per episode, grounding IoU per episode, and the entropy before and after looking.

*Entropy before and after looking*: for an episode with at least one look, "before" is
the entropy the step that made the first look was taken under (the uncertainty that sent
the agent to look) and "after" the entropy of its last step (usually the answer, taken
after every view). Steps without a value (``entropy`` is ``None``) leave the pair out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from agents.metrics import EpisodeStats, GroupAccuracy, MetricTally

from . import svg
from .records import TrajectorySource


def entropy_before_after(record: dict[str, Any]) -> tuple[float, float] | None:
    """``(entropy at the first look, entropy at the last step)`` of a record, or ``None`` (see the module doc)."""
    steps = record.get("steps") or []
    first_look = next((s for s in steps if s.get("new_view") is not None), None)
    if first_look is None or not steps:
        return None
    before, after = first_look.get("entropy"), steps[-1].get("entropy")
    if not (_is_finite(before) and _is_finite(after)) or steps[-1] is first_look:
        return None
    return float(before), float(after)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SourceStats:
    """Running statistics of one trajectory source (one agent on one env)."""

    source: TrajectorySource
    run_label: str = ""
    tally: MetricTally = field(default_factory=MetricTally)
    zoom_counts: Counter = field(default_factory=Counter)
    ious: list[float] = field(default_factory=list)
    entropy_pairs: list[tuple[float, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.run_label}: {self.source.label}" if self.run_label else self.source.label

    def add(self, record: dict[str, Any]) -> EpisodeStats:
        stats = EpisodeStats.from_record(record)
        self.tally.add(stats)
        self.zoom_counts[stats.zooms] += 1
        if stats.grounding_iou is not None:
            self.ious.append(stats.grounding_iou)
        pair = entropy_before_after(record)
        if pair is not None:
            self.entropy_pairs.append(pair)
        return stats


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _group_cell(group: GroupAccuracy | None) -> str:
    return "–" if group is None else f"{100 * group.accuracy:.1f} <small>(n={group.n})</small>"


def summary_table(sources: Sequence[SourceStats]) -> str:
    """The headline table: one column per source (agent × env × run)."""
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, cells: list[str]) -> None:
        rows.append((name, cells))

    live = [s for s in sources if s.tally.episodes]
    if not live:
        return '<p class="note">No trajectory records in this run yet.</p>'
    row("episodes", [f"{s.tally.episodes}" + (" <small>(interrupted)</small>" if s.source.partial else "")
                     for s in live])
    row("accuracy (%)", [_pct(s.tally.accuracy) for s in live])
    for answer_type in ("closed", "open"):
        cells = [_group_cell(s.tally.accuracy_by("answer_type").get(answer_type)) for s in live]
        if any(c != "–" for c in cells):
            row(f"{answer_type} accuracy (%)", cells)
    if any(s.tally.recall.count for s in live):
        row("open token recall (%)", [_pct(s.tally.recall.mean()) for s in live])
    tools = [s.tally.tool_stats() for s in live]
    row("zoom rate (%)", [_pct(t.zoom_rate) for t in tools])
    row("mean zooms/crops", [f"{t.mean_zooms:.2f}" for t in tools])
    row("mean steps", [f"{t.mean_steps:.2f}" for t in tools])
    row("invalid actions (% of steps)", [_pct(t.invalid_action_rate) for t in tools])
    row("answered (%)", [_pct(t.answered_rate) for t in tools])
    row("mean return", [f"{s.tally.reward.value / s.tally.episodes:.3f}" for s in live])
    grounding = [s.tally.grounding() for s in live]
    if any(g.episodes for g in grounding):
        row("grounding mIoU (%, no zoom = 0)", [f"{_pct(g.miou)} <small>(n={g.episodes})</small>" if g.episodes
                                                else "–" for g in grounding])
        row("grounding mIoU when zoomed (%)", [f"{_pct(g.miou_when_zoomed)} <small>(n={g.zoomed})</small>"
                                               if g.zoomed else "–" for g in grounding])
    head = "".join(f"<th>{escape(s.label)}</th>" for s in live)
    body = "".join(f"<tr><th>{escape(name)}</th>{''.join(f'<td>{c}</td>' for c in cells)}</tr>" for name, cells in rows)
    html = [f'<table class="stats"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>']
    for group, title in (("question_type", "question type"), ("organ", "organ"), ("modality", "modality")):
        per_source = [s.tally.accuracy_by(group) for s in live]
        names = list(dict.fromkeys(k for groups in per_source for k in groups))
        if len(names) < 2:
            continue
        body = "".join(f"<tr><th>{escape(name)}</th>"
                       f"{''.join(f'<td>{_group_cell(groups.get(name))}</td>' for groups in per_source)}</tr>"
                       for name in names)
        html.append(f'<table class="stats by"><thead><tr><th>accuracy (%) by {title}</th>{head}</tr></thead>'
                    f"<tbody>{body}</tbody></table>")
    return "".join(html)


def summary_plots(sources: Sequence[SourceStats], curves: dict[str, list[tuple[float, float]]] | None = None,
                  max_curves: int = 12) -> list[str]:
    """The summary's charts as SVG strings."""
    live = [s for s in sources if s.tally.episodes]
    plots = []
    if not live:  # a training run without trajectories: learning curves only
        return [svg.line_chart([(name, points)], title=name, points=len(points) <= 40)
                for name, points in list((curves or {}).items())[:max_curves]]
    by_type = [s.tally.accuracy_by("question_type") for s in live]
    types = list(dict.fromkeys(k for groups in by_type for k in groups))
    if types:
        plots.append(svg.bar_chart(
            types, [(s.label, [g[t].accuracy if t in g else None for t in types]) for s, g in zip(live, by_type)],
            title="accuracy by question type", y_max=1.0, percent=True,
            notes=[[f"n={g[t].n}" if t in g else "" for t in types] for g in by_type]))
    most = max((max(s.zoom_counts) for s in live if s.zoom_counts), default=0)
    counts = list(range(most + 1))
    plots.append(svg.bar_chart([str(c) for c in counts],
                               [(s.label, [s.zoom_counts.get(c, 0) for c in counts]) for s in live],
                               title="zooms/crops per episode (episodes)"))
    if any(s.ious for s in live):
        edges = [i / 10 for i in range(11)]
        plots.append(svg.histogram([(s.label, s.ious) for s in live], edges,
                                   title="grounding IoU per episode (episodes)"))
    if any(s.entropy_pairs for s in live):
        edges = [i / 10 for i in range(11)]
        series = []
        with_pairs = [s for s in live if s.entropy_pairs]
        for s in with_pairs:
            prefix = f"{s.label} " if len(with_pairs) > 1 else ""
            series.append((f"{prefix}before", [b for b, _ in s.entropy_pairs]))
            series.append((f"{prefix}after", [a for _, a in s.entropy_pairs]))
        title = "entropy before / after looking"
        if len(with_pairs) == 1:
            pairs = with_pairs[0].entropy_pairs
            title += f" · lower after in {100 * sum(a < b for b, a in pairs) / len(pairs):.0f}%"
        plots.append(svg.histogram(series, edges, title=title))
    for name, points in list((curves or {}).items())[:max_curves]:
        plots.append(svg.line_chart([(name, points)], title=name, points=len(points) <= 40))
    return plots


__all__ = ["SourceStats", "entropy_before_after", "summary_plots", "summary_table"]
