"""Build the report of one run (or two side by side) from its trajectory records.

Two passes over the records, both streamed: the summary counts every episode, and only
the episodes the page shows (``max_episodes``) are kept, drawn and embedded, so the file
grows with what is shown, not with the run.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.metrics import EpisodeStats
from agents.runner import write_text

from . import groups as groups_mod
from .episodes import box_colours, detail, index_entry
from .images import ImageLoader, encode, fit, placeholder
from .page import json_block, render_page, text_block
from .records import ReportInputError, iter_records, read_metrics, read_run
from .summary import SourceStats, summary_plots, summary_table
from .svg import SERIES_COLOURS

EVAL_BOX_COLOUR = "#ffffff"
DEFAULT_MAX_EPISODES = 200


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows and how large its images are.

    Attributes:
        max_episodes: Episodes shown in the list (all of them count in the summary). In a
            comparison, pairs of episodes: ``max_episodes // 2`` questions.
        max_groups: Groups of rollouts shown.
        page_size: Episodes per page of the list.
        thumb_side: Longest side of list thumbnails (px).
        detail_side: Longest side of the opened episode's original (px).
        view_side: Longest side of each view in the strip (px).
        data_root: Where the run's dataset is now, if it moved (else the run's own ``data_root``).
        progress: Show a progress bar while drawing episodes.
    """

    max_episodes: int = DEFAULT_MAX_EPISODES
    max_groups: int = 50
    page_size: int = 20
    thumb_side: int = 96
    detail_side: int = 384
    view_side: int = 128
    data_root: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("max_episodes", "max_groups", "page_size", "thumb_side", "detail_side", "view_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name in ("max_episodes", "max_groups") else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name.startswith('max') else 'positive'} "
                                 f"integer, got {value!r}")


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it holds."""

    path: Path
    size_bytes: int
    episodes_total: int
    episodes_shown: int
    groups: int
    seconds: float


@dataclass
class _Shown:
    """One episode chosen for the list."""

    run: int
    source: int  # index into the flat list of sources of all runs
    record: dict[str, Any]


def default_output(run: str | Path, run_b: str | Path | None = None) -> Path:
    """``RUN_DIR/report.html``; ``RUN_A/compare_<B>.html`` for two runs; ``<file>.report.html`` beside a file."""
    root = Path(run)
    folder = root if root.is_dir() else root.parent
    if run_b is not None:
        other = Path(run_b)
        return folder / f"compare_{other.name if other.is_dir() else other.stem}.html"
    return folder / "report.html" if root.is_dir() else folder / f"{root.name.split('.')[0]}.report.html"


def build_report(run: str | Path, run_b: str | Path | None = None, *, out: str | Path | None = None,
                 options: ReportOptions | None = None) -> ReportResult:
    """Write the HTML report of ``run`` (or of ``run`` against ``run_b``) and return where it went.

    Raises:
        ReportInputError: When a run cannot be read (missing folder, no trajectories, a bad record).
    """
    start = time.perf_counter()
    options = options or ReportOptions()
    runs = [read_run(run)] + ([read_run(run_b)] if run_b is not None else [])
    compare = len(runs) == 2
    sources = [(r, s) for r, info in enumerate(runs) for s in info.sources]
    stats = [SourceStats(s, "AB"[r] if compare else "") for r, s in sources]
    collector = groups_mod.GroupCollector(options.max_groups if not compare else 0)

    comparison = _choose_compare(sources, stats, options) if compare else None
    shown = comparison.shown if comparison else _choose_single(sources, stats, collector, options)
    total = sum(s.tally.episodes for s in stats)
    if total == 0 and not (runs[0].metrics and not compare):
        raise ReportInputError(f"{', '.join(str(r.root) for r in runs)}: the trajectory files hold no episode yet")

    loaders = [ImageLoader(s, options.data_root) for _, s in sources]
    table = _ImageTable(sources, loaders, options)
    entries = []
    bar = tqdm(shown, desc="report: drawing episodes", unit="ep", disable=not options.progress)
    for number, item in enumerate(bar):
        record = item.record
        k, original = table.get(item.source, record["sample"], tuple(record["image_size"]))
        group = record["group"].get("id") if isinstance(record.get("group"), dict) else None
        entries.append(index_entry(number, record, run=item.run, source=item.source, image=k,
                                   iou=EpisodeStats.from_record(record).grounding_iou,
                                   group=None if group is None else str(group)))
        error = loaders[item.source].error if original is None else None
        table.blocks.append(json_block(f"ep-{number}", detail(record, original, view_side=options.view_side,
                                                              load_error=error)))
    bar.close()
    blocks = table.blocks

    group_list = collector.finish()
    for g, group in enumerate(group_list):
        k, _ = table.get(group.source, group.sample, group.image_size)
        mask = None
        if group.consensus is not None and group.consensus.any():
            mask = encode(groups_mod.consensus_png_rgba(group.consensus), png=True).uri
        blocks.append(json_block(f"grp-{g}", {
            "id": group.id, "img": k, "w": group.image_size[0], "h": group.image_size[1], "mask": mask,
            "question": group.sample.get("question", ""), "ref": group.sample.get("answer", ""),
            "evalb": [list(b) for b in group.sample.get("eval_boxes") or []],
            "credit_error": group.credit_error, "tree_svg": groups_mod.branch_tree(group),
            "members": [{"index": m.index, "parent": m.parent, "fork_step": m.fork_step, "fork_token": m.fork_token,
                         "correct": m.correct, "boxes": m.boxes, "iou": m.iou, "tool_reward": m.tool_reward,
                         "case": m.case, "rec_iou": m.recorded_iou, "rec_tool_reward": m.recorded_tool_reward,
                         "episode": m.episode, "steps": m.steps} for m in group.members]}))

    notes = _notes(runs, stats, loaders, len(shown), total, compare, collector)
    curves = read_metrics(runs[0].metrics) if runs[0].metrics is not None else None
    index = {
        "runs": [{"name": r.name, "short": "AB"[i] if compare else ""} for i, r in enumerate(runs)],
        "sources": [{"label": st.label, "run": r} for st, (r, _) in zip(stats, sources)],
        "palette": box_colours(), "series": list(SERIES_COLOURS), "eval_colour": EVAL_BOX_COLOUR,
        "page_size": options.page_size, "episodes": entries, "thumbs": table.thumbs, "groups": len(group_list),
        "compare": {"pairs": comparison.pairs} if comparison else None,
    }
    title = (f"MedVR report: {runs[0].name} vs {runs[1].name}" if compare else f"MedVR report: {runs[0].name}")
    meta = escape(f"{total} episodes · {len(sources)} trajectory file{'s' if len(sources) > 1 else ''} · "
                  f"written {time.strftime('%Y-%m-%d %H:%M')}")
    html = render_page(title=title, meta=meta, summary_html=summary_table(stats), plots=summary_plots(stats, curves),
                       notes=notes, index=index, blocks=blocks, has_groups=bool(group_list),
                       compare_html=_compare_section(comparison) if comparison else "")
    path = Path(out) if out is not None else default_output(run, run_b)
    write_text(path, html)
    return ReportResult(path, path.stat().st_size, total, len(shown), len(group_list), time.perf_counter() - start)


class _ImageTable:
    """Each distinct original once: a thumbnail in the index and a detail-size image block, shared by its episodes.

    The pixels of the last few originals are kept for cutting views; older ones are
    reloaded from the dataset (which caches decoded images itself) when needed again.
    """

    KEEP = 16

    def __init__(self, sources, loaders: list[ImageLoader], options: ReportOptions) -> None:
        self.sources, self.loaders, self.options = sources, loaders, options
        self.ids: dict[tuple[str, str], int] = {}
        self.thumbs: list[str] = []
        self.blocks: list[str] = []
        self._pixels: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, source: int, sample: dict[str, Any], size: tuple[int, int]) -> tuple[int, Any]:
        """``(image number, original pixels or None)`` for ``sample`` of trajectory source ``source``."""
        key = (str(self.sources[source][1].env_id), str(sample.get("image_key") or sample.get("sample_id")))
        if key in self._pixels:
            self._pixels.move_to_end(key)
            return self.ids[key], self._pixels[key]
        original = self.loaders[source].load(sample, size)
        if key not in self.ids:
            pixels = original if original is not None else placeholder(*size, self.options.detail_side)
            self.ids[key] = len(self.thumbs)
            self.thumbs.append(encode(fit(pixels, self.options.thumb_side), quality=70).uri)
            self.blocks.append(text_block(f"im-{self.ids[key]}",
                                          encode(fit(pixels, self.options.detail_side), quality=78).uri))
        self._pixels[key] = original
        if len(self._pixels) > self.KEEP:
            self._pixels.popitem(last=False)
        return self.ids[key], original


def _records(sources: list[tuple[int, Any]]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(source index, position in its file, record)`` over every source in order."""
    for i, (_, source) in enumerate(sources):
        for position, record in enumerate(iter_records(source)):
            yield i, position, record


def _choose_single(sources, stats, collector, options: ReportOptions) -> list[_Shown]:
    """Count every record; keep the first records of each source, the cap shared evenly among sources."""
    per_source = math.ceil(options.max_episodes / max(1, len(sources)))
    kept = [0] * len(sources)
    shown: list[_Shown] = []
    for i, _, record in _records(sources):
        stats[i].add(record)
        number = None
        if kept[i] < per_source and len(shown) < options.max_episodes:
            kept[i] += 1
            number = len(shown)
            shown.append(_Shown(sources[i][0], i, record))
        collector.add(record, source=i, episode=number)
    return shown


@dataclass
class _Comparison:
    """Two runs matched by sample id: the episodes shown (pairs, A then B), the pairs, and counts of changes."""

    shown: list[_Shown]
    pairs: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)
    matched: int = 0
    sizes: tuple[int, int] = (0, 0)


def _choose_compare(sources, stats, options: ReportOptions) -> _Comparison:
    """Match the two runs' episodes by sample id; show the pairs whose grade or zooming changed first."""
    first: list[dict[str, tuple[int, int, bool, int]]] = [{}, {}]
    order: list[str] = []
    for i, position, record in _records(sources):
        st = stats[i].add(record)
        run = sources[i][0]
        if st.sample_id not in first[run]:
            first[run][st.sample_id] = (i, position, st.correct, st.zooms)
            if run == 0:
                order.append(st.sample_id)
    matched = [sid for sid in order if sid in first[1]]

    def change(sid: str) -> tuple[str, str]:
        (_, _, ca, za), (_, _, cb, zb) = first[0][sid], first[1][sid]
        grade = ("both correct" if ca else "wrong→correct") if cb else ("correct→wrong" if ca else "both wrong")
        zoom = "" if za == zb else ("zoomed in B only" if za == 0 else "zoomed in A only" if zb == 0
                                    else f"zooms {za}→{zb}")
        return grade, zoom

    changes = {sid: change(sid) for sid in matched}
    rank = {"correct→wrong": 0, "wrong→correct": 0}
    chosen = sorted(matched, key=lambda sid: (rank.get(changes[sid][0], 2) if changes[sid][0] in rank
                                              else 1 if changes[sid][1] else 2))[: options.max_episodes // 2]
    wanted = {}
    for sid in chosen:
        for run in (0, 1):
            i, position, _, _ = first[run][sid]
            wanted[(i, position)] = (sid, run)
    picked: dict[tuple[str, int], dict[str, Any]] = {}
    for i, position, record in _records(sources):
        if (i, position) in wanted:
            picked[wanted[(i, position)]] = record
    shown: list[_Shown] = []
    pairs = []
    for sid in chosen:
        ids = []
        for run in (0, 1):
            ids.append(len(shown))
            shown.append(_Shown(run, first[run][sid][0], picked[(sid, run)]))
        sample = picked[(sid, 0)]["sample"]
        pairs.append({"a": ids[0], "b": ids[1], "sid": sid, "q": sample.get("question", ""),
                      "ref": sample.get("answer", ""), "change": changes[sid][0], "zoom": changes[sid][1]})
    counts: dict[str, int] = {}
    for grade, zoom in changes.values():
        counts[grade] = counts.get(grade, 0) + 1
        if zoom:
            counts["zooming changed"] = counts.get("zooming changed", 0) + 1
    return _Comparison(shown, pairs, counts, len(matched), (len(first[0]), len(first[1])))


def _compare_section(comparison: _Comparison) -> str:
    counts, matched, sizes = comparison.counts, comparison.matched, comparison.sizes
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in
                   sorted(counts.items(), key=lambda kv: ["correct→wrong", "wrong→correct", "both correct",
                                                          "both wrong", "zooming changed"].index(kv[0])))
    options = "".join(f'<option value="{v}">{t}</option>' for v, t in (
        ("all", "all shown"), ("correct→wrong", "correct→wrong"), ("wrong→correct", "wrong→correct"),
        ("zoom", "zooming changed"), ("both correct", "both correct"), ("both wrong", "both wrong")))
    return (f'<section id="changes"><h2>What changed from A to B</h2>'
            f'<p class="note">{matched} questions in both runs (A has {sizes[0]}, B has {sizes[1]} distinct '
            f'questions); matched by sample id.</p><table class="stats" id="change-counts">{rows}</table>'
            f'<div class="filters"><label>show <select id="f-change">{options}</select></label></div>'
            f'<div id="change-pager"></div><div id="change-list"></div></section>\n')


def _notes(runs, stats, loaders, shown: int, total: int, compare: bool, collector) -> list[str]:
    notes = []
    if shown < total:
        what = "questions (as pairs)" if compare else "episodes"
        notes.append(f"The list shows {shown} of {total} episodes ({what} whose outcome changed first); the summary "
                     f"counts all {total}. Raise <code>--max-episodes</code> to show more." if compare else
                     f"The list shows {shown} of {total} {what}; the summary counts all {total}. "
                     f"Raise <code>--max-episodes</code> to show more.")
    for st, loader in zip(stats, loaders):
        if st.source.partial:
            notes.append(f"{escape(st.label)}: the run was interrupted; read from "
                         f"<code>{escape(st.source.path.name)}</code>.")
        if loader.error:
            notes.append(f'<span class="warn">{escape(st.label)}: images drawn as grey stand-ins: '
                         f"{escape(loader.error)}. Pass <code>--data-root</code> to point at the dataset.</span>")
    if collector.skipped:
        notes.append(f"{len(collector.skipped)} more groups of rollouts are not shown (<code>--max-groups</code>).")
    for r in runs:
        if r.metrics is not None:
            notes.append(f"Learning curves from <code>{escape(r.metrics.name)}</code>.")
    return notes


__all__ = ["DEFAULT_MAX_EPISODES", "ReportOptions", "ReportResult", "build_report", "default_output"]
