#!/usr/bin/env python
"""How fast is one ``MedVRVQAEnv.step``, and what does it cost next to the alternatives?

Everything runs in one process, in one run:

1. ``env.step`` throughput for zoom, crop and relook on a chest X-ray original of
   512 px and 2048 px (pydicom's ``RG1_UNCI.dcm`` test file, windowed to uint8 RGB;
   a smooth random image if it is unavailable), at observation sizes 84 and 224,
   with ``return_views=False`` (plus zoom rows with ``return_views=True``).
2. The same outputs made the way peer tool servers do it: every call re-opens the
   image file with PIL (PNG and JPEG), crops and resizes with PIL bicubic.
3. The floor: one bare ``cv2.resize`` of the crop (a numpy slice of the cached
   original) to the observation size, with the interpolation the env picks.
4. A resampler table: cv2 INTER_AREA / INTER_LINEAR / INTER_CUBIC vs PIL BICUBIC.
5. Resident memory of 16 live envs on the 2048 px original.

Timing: ``time.perf_counter`` around blocks of calls, after warm-up. The contenders
of one table row are timed in interleaved rounds (one block of each per round), so
machine noise hits them alike; a time is the median over rounds of the per-call
time, a ratio the median over rounds of the per-round ratio. Env episodes are reset
(untimed) before every block, so an episode never grows past one block of steps.

Usage::

    python benchmarks/env_step.py            # ~1.5 min on 2 cores
    python benchmarks/env_step.py --quick    # ~20 s
    python benchmarks/env_step.py --steps 5000 --json results.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import PIL
from PIL import Image

from medvr_env import imaging
from medvr_env.data.sample import Sample, as_rgb_uint8
from medvr_env.env import MedVRVQAEnv

IMAGE_SIDES = (512, 2048)
OBS_SIZES = (84, 224)
TOOLS = ("zoom", "crop", "relook")
VIEW_SIZE = 448  # the env's default zoom output (longest side)
MAX_VIEW_SIDE = 1024  # the env's default image budget for crop / relook
N_BOXES = 64
N_LIVE_ENVS = 16


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Budget:
    """Limits for one measured cell (one table row): rounds stop at ``cell_cap_s`` seconds or when the first
    contender has made ``max_iters`` calls, whichever comes first, but never before ``min_rounds`` rounds."""

    max_iters: int
    cell_cap_s: float
    env_block_s: float  # target duration of one timed env block
    other_block_s: float  # target duration of one timed block of any other contender
    resampler_cap_s: float
    max_env_block: int = 100
    min_rounds: int = 5
    warmup_s: float = 0.05


def make_budget(steps: int, quick: bool) -> Budget:
    if quick:
        return Budget(max_iters=steps, cell_cap_s=0.4, env_block_s=0.02, other_block_s=0.01, resampler_cap_s=0.05,
                      max_env_block=50, min_rounds=3, warmup_s=0.01)
    return Budget(max_iters=steps, cell_cap_s=4.0, env_block_s=0.1, other_block_s=0.04, resampler_cap_s=0.3)


# --------------------------------------------------------------------------- timing
@dataclass
class Contender:
    """Something to time: ``call(i)`` for i = 0, 1, ...; ``before_block`` runs untimed before each block."""

    name: str
    call: Callable[[int], Any]
    before_block: Callable[[], Any] | None = None
    max_block: int = 1_000_000
    target_block_s: float = 0.04


@dataclass
class Timing:
    samples: list[float]  # per-call seconds, one per timed block (= per round)
    calls: int

    @property
    def us(self) -> float:
        return statistics.median(self.samples) * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"median_us": self.us, "min_block_us": min(self.samples) * 1e6,
                "max_block_us": max(self.samples) * 1e6, "calls": self.calls, "blocks": len(self.samples)}


def race(contenders: Sequence[Contender], *, cap_s: float, max_iters: int, budget: Budget) -> dict[str, Timing]:
    """Time the contenders in interleaved rounds (one block of each per round, order rotating), so that
    machine noise hits them alike and per-round ratios stay meaningful. Returns per-call timings."""
    blocks = []
    for c in contenders:  # warm-up, which also sizes the blocks
        if c.before_block is not None:
            c.before_block()
        n, t0 = 0, time.perf_counter()
        while n < 1 or (time.perf_counter() - t0 < budget.warmup_s and n < 200):
            c.call(n)
            n += 1
        per_call = (time.perf_counter() - t0) / n
        block = int(c.target_block_s / max(per_call, 1e-9))
        blocks.append(max(1, min(block, c.max_block, max(1, max_iters // budget.min_rounds))))

    samples: list[list[float]] = [[] for _ in contenders]
    calls = [0] * len(contenders)
    start, rnd = time.perf_counter(), 0
    while True:
        order = list(range(len(contenders)))
        order = order[rnd % len(order):] + order[: rnd % len(order)]
        for k in order:
            c, block, i = contenders[k], blocks[k], calls[k]
            if c.before_block is not None:
                c.before_block()
            t = time.perf_counter()
            for j in range(i, i + block):
                c.call(j)
            samples[k].append((time.perf_counter() - t) / block)
            calls[k] += block
        rnd += 1
        if rnd >= budget.min_rounds and (calls[0] + blocks[0] > max_iters or time.perf_counter() - start > cap_s):
            break
    return {c.name: Timing(s, n) for c, s, n in zip(contenders, samples, calls)}


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of a/b (both timed in the same rounds)."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples))


def paired_diff_us(a: Timing, b: Timing) -> float:
    return statistics.median(x - y for x, y in zip(a.samples, b.samples)) * 1e6


# --------------------------------------------------------------------------- images and data
def load_base_image() -> tuple[np.ndarray, str]:
    """A 2-D uint8 image: the pydicom chest X-ray test file if available, else a smooth random image."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file

        path = get_testdata_file("RG1_UNCI.dcm")
        if path is None:
            raise FileNotFoundError("RG1_UNCI.dcm")
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
        lo, hi = np.percentile(pixels, [0.5, 99.5])
        gray = np.clip((pixels - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            gray = 255 - gray  # MONOCHROME1: high values are dark
        h, w = gray.shape
        return gray, f"pydicom RG1_UNCI.dcm chest X-ray ({w}x{h}, {ds.pixel_array.dtype}, percentile-windowed)"
    except Exception as exc:  # pragma: no cover - depends on optional test data
        rng = np.random.default_rng(0)
        acc = np.zeros((1024, 1024), np.float32)
        for sigma in (64, 16, 4, 1):
            acc += cv2.GaussianBlur(rng.standard_normal((1024, 1024)).astype(np.float32), (0, 0), sigma) * sigma
        acc = (acc - acc.min()) / (acc.max() - acc.min()) * 255
        return acc.astype(np.uint8), f"smooth random image (pydicom test file unavailable: {type(exc).__name__})"


def make_original(gray: np.ndarray, side: int) -> np.ndarray:
    """``gray`` resized to ``side`` x ``side`` as a read-only uint8 RGB array."""
    h, w = gray.shape
    interp = cv2.INTER_AREA if side * side < w * h else cv2.INTER_CUBIC
    small = cv2.resize(gray, (side, side), interpolation=interp)
    return as_rgb_uint8(cv2.cvtColor(small, cv2.COLOR_GRAY2RGB))


class BenchDataset:
    """One sample, one cached in-memory original: the step measurement excludes data generation."""

    split = "bench"

    def __init__(self, image: np.ndarray, name: str = "bench-cxr") -> None:
        self.name = name
        self._image = as_rgb_uint8(image)
        self._sample = Sample(
            sample_id=f"{name}-0",
            question="Is there a nodule in the right upper lobe?",
            answer="no",
            image_key="0",
            answer_type="closed",
            modality="CR",
            organ="chest",
            split=self.split,
        )

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:
        if index != 0:
            raise IndexError(index)
        return self._sample

    def load_image(self, sample: Sample) -> np.ndarray:
        return self._image


# --------------------------------------------------------------------------- actions and geometry
def make_norm_boxes(n: int, seed: int = 1234) -> list[list[float]]:
    """Fixed pseudo-random boxes as 0-1 fractions, each side 1/8 to 1/2 of the image side."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        w, h = rng.uniform(1 / 8, 1 / 2, size=2)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        boxes.append([round(float(x), 4), round(float(y), 4), round(float(x + w), 4), round(float(y + h), 4)])
    return boxes


def make_actions(tool: str, norm_boxes: Sequence[list[float]]) -> list[dict[str, Any]]:
    if tool == "relook":
        return [{"name": "relook", "arguments": {"view": 0}}]
    return [{"name": tool, "arguments": {"bbox_2d": list(b), "source": 0}} for b in norm_boxes]


@dataclass(frozen=True)
class Region:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in original pixels (what the env applied)
    view_wh: tuple[int, int]  # delivered view size the env produced


def discover_regions(dataset: BenchDataset, actions: Sequence[dict[str, Any]]) -> list[Region]:
    """The pixel boxes and view sizes the env itself produces for ``actions`` (so all contenders cut the same pixels)."""
    env = MedVRVQAEnv(dataset=dataset, view_size=VIEW_SIZE, max_view_side=MAX_VIEW_SIDE, max_steps=10**6,
                      return_views=True)
    env.reset(seed=0)
    regions = []
    for action in actions:
        _, _, _, _, info = env.step(action)
        if info["error"]:
            raise RuntimeError(f"benchmark action {action} was rejected: {info['error_message']}")
        view = info["views"][0]
        box = info["applied_box"] or [0, 0, *env.episode.image_size]
        regions.append(Region(tuple(int(v) for v in box), (int(view.shape[1]), int(view.shape[0]))))
    env.close()
    return regions


def env_interpolation(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> int:
    """The interpolation the env's resize picks: area to shrink, cubic to magnify."""
    return cv2.INTER_AREA if dst_wh[0] * dst_wh[1] < src_wh[0] * src_wh[1] else cv2.INTER_CUBIC


# --------------------------------------------------------------------------- contenders
def env_contender(dataset, tool, obs, return_views, actions, budget: Budget) -> Contender:
    """``env.step`` on the unwrapped env; the episode is reset (untimed) before every block."""
    env = MedVRVQAEnv(dataset=dataset, obs_size=obs, view_size=VIEW_SIZE, max_view_side=MAX_VIEW_SIDE,
                      max_steps=10**6, return_views=return_views)
    env.reset(seed=0)
    obs_out, _, _, _, info = env.step(actions[0])
    assert obs_out["image"].shape == (obs, obs, 3) and not info["error"], info["error_message"]
    n, step = len(actions), env.step
    return Contender("env", lambda i: step(actions[i % n]), before_block=lambda: env.reset(seed=0),
                     max_block=budget.max_env_block, target_block_s=budget.env_block_s)


def pil_reopen_contender(name: str, path: str, regions: Sequence[Region], obs: int, with_view: bool,
                         budget: Budget) -> Contender:
    """Per call: open the file, crop, resize (bicubic) to the obs size, and to the view size if ``with_view``."""
    n = len(regions)

    def call(i: int) -> tuple[np.ndarray, ...]:
        region = regions[i % n]
        with Image.open(path) as im:
            if region.box != (0, 0, im.width, im.height):
                im = im.crop(region.box)
            outs = [np.asarray(im.resize((obs, obs), Image.BICUBIC))]
            if with_view:
                view = im if im.size == region.view_wh else im.resize(region.view_wh, Image.BICUBIC)
                outs.append(np.asarray(view))
        return tuple(outs)

    first = call(0)
    assert first[0].shape == (obs, obs, 3)
    if with_view:
        assert first[1].shape == (regions[0].view_wh[1], regions[0].view_wh[0], 3)
    return Contender(name, call, target_block_s=budget.other_block_s)


def floor_contender(name: str, original: np.ndarray, regions: Sequence[Region], obs: int, with_view: bool,
                    budget: Budget, interp: int | None = None) -> Contender:
    """Per call: one cv2.resize of the crop slice to the obs size (plus the view-size resize if ``with_view``)."""
    n = len(regions)
    plans = []
    for r in regions:
        x1, y1, x2, y2 = r.box
        src = (x2 - x1, y2 - y1)
        plans.append((x1, y1, x2, y2, interp if interp is not None else env_interpolation(src, (obs, obs)),
                      r.view_wh if with_view and r.view_wh != src else None,
                      interp if interp is not None else env_interpolation(src, r.view_wh)))

    def call(i: int) -> None:
        x1, y1, x2, y2, obs_interp, view_wh, view_interp = plans[i % n]
        crop = original[y1:y2, x1:x2]
        if interp is None:  # the env's own resampler (two-step area shrink), so env/floor isolates overhead
            imaging.resize(crop, (obs, obs))
            if view_wh is not None:
                imaging.resize(crop, view_wh)
            return
        cv2.resize(crop, (obs, obs), interpolation=obs_interp)
        if view_wh is not None:
            cv2.resize(crop, view_wh, interpolation=view_interp)

    return Contender(name, call, target_block_s=budget.other_block_s)


# --------------------------------------------------------------------------- memory
def rss_mb() -> float:
    """Current resident set size in MB (VmRSS from /proc/self/status; peak RSS via resource as a fallback)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # peak, not current (Linux: kB)


def _release_freed_memory() -> None:
    """gc, then hand freed heap pages back to the OS (glibc malloc_trim) so RSS deltas are not order-dependent."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


MEMORY_SCENARIOS = (
    # label, each env gets its own copy of the original, return_views
    ("shared original, return_views=True", False, True),
    ("shared original, return_views=False", False, False),
    ("own original per env, return_views=True", True, True),
)


def memory_rows(original: np.ndarray, zoom_action: dict[str, Any]) -> list[dict[str, Any]]:
    """RSS before/after creating, resetting and zoom-stepping 16 envs on ``original`` (obs_size 224)."""
    # A throwaway env first, so lazy imports and one-time allocations are not counted.
    for return_views in (True, False):
        warm = MedVRVQAEnv(dataset=BenchDataset(original), max_steps=10**6, return_views=return_views)
        warm.reset(seed=0)
        warm.step(zoom_action)
        warm.close()
    del warm

    rows = []
    shared = BenchDataset(original)
    for label, own_copy, return_views in MEMORY_SCENARIOS:
        _release_freed_memory()
        before = rss_mb()
        live = []
        for k in range(N_LIVE_ENVS):
            dataset = BenchDataset(np.array(original, copy=True)) if own_copy else shared
            env = MedVRVQAEnv(dataset=dataset, max_steps=10**6, return_views=return_views)
            obs0, info0 = env.reset(seed=k)
            obs1, _, _, _, info1 = env.step(zoom_action)
            live.append((env, obs0, info0, obs1, info1))  # keep what a vector env would hold
        _release_freed_memory()
        after = rss_mb()
        total = after - before
        # Pixels the episodes keep: their render cache (the delivered-size views returned in info["views"]).
        cached = sum(a.nbytes for e, *_ in live for a in getattr(e.episode, "_pixels", {}).values())
        rows.append({"scenario": label, "envs": N_LIVE_ENVS, "rss_before_mb": before, "rss_after_mb": after,
                     "total_mb": total, "mb_per_env": total / N_LIVE_ENVS,
                     "view_cache_mb_per_env": cached / N_LIVE_ENVS / 2**20})
        for e, *_ in live:
            e.close()
        del live, env, obs0, info0, obs1, info1, dataset
    _release_freed_memory()
    return rows


# --------------------------------------------------------------------------- output
def fmt_us(us: float) -> str:
    if abs(us) >= 100:
        return f"{us:,.0f}"
    if abs(us) >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_x(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    left = [all(not _numeric(r[i]) for r in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if lft else v.rjust(w) for v, w, lft in zip(values, widths, left)).rstrip()

    print()
    print(title)
    print("=" * len(title))
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in cells:
        print(line(r))
    for note in notes:
        print(f"  * {note}")
    sys.stdout.flush()


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace("x", "").replace("%", "").replace("+", "").replace("-", "").strip()
    try:
        float(t)
        return True
    except ValueError:
        return text in ("", "-")


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "pillow": PIL.__version__,
    }


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="most env steps (and calls) per measurement (default 2000; 300 with --quick)")
    parser.add_argument("--quick", action="store_true", help="short run (~20 s): fewer steps, shorter time caps")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (300 if args.quick else 2000)
    if steps < 5:
        parser.error("--steps must be at least 5")
    budget = make_budget(steps, args.quick)
    t_start = time.perf_counter()

    machine = machine_info()
    gray, source = load_base_image()
    originals = {side: make_original(gray, side) for side in IMAGE_SIDES}
    norm_boxes = make_norm_boxes(N_BOXES)

    print("MedVR env.step benchmark")
    print("========================")
    for key, value in machine.items():
        print(f"{key:>15}: {value}")
    print(f"{'image':>15}: {source}; originals {', '.join(f'{s}x{s}' for s in IMAGE_SIDES)} uint8 RGB")
    print(f"{'settings':>15}: per row at most {steps} env steps or {budget.cell_cap_s:g} s, >= {budget.min_rounds}"
          f" interleaved rounds (one timed block of each contender per round); medians over rounds"
          f"{' (quick)' if args.quick else ''}")
    print(f"{'boxes':>15}: {N_BOXES} fixed pseudo-random boxes, sides 1/8-1/2 of the image, always on view 0;"
          f" view_size {VIEW_SIZE}, max_view_side {MAX_VIEW_SIDE}")
    sys.stdout.flush()

    results: dict[str, Any] = {"machine": machine, "image_source": source, "steps": steps, "quick": args.quick}

    # 5 first: the RSS deltas are cleanest before the timing runs churn the allocator.
    zoom_action = make_actions("zoom", norm_boxes)[0]
    mem = memory_rows(originals[2048], zoom_action)
    results["memory"] = mem

    with tempfile.TemporaryDirectory(prefix="medvr-bench-") as tmp:
        files: dict[tuple[int, str], str] = {}
        for side, img in originals.items():
            for fmt, kwargs in (("png", {}), ("jpeg", {"quality": 90})):
                path = os.path.join(tmp, f"cxr_{side}.{fmt}")
                Image.fromarray(img).save(path, format=fmt.upper(), **kwargs)
                files[side, fmt] = path

        # ---------------------------------------------------------------- 1-3
        cells = [(tool, side, obs, False) for tool in TOOLS for side in IMAGE_SIDES for obs in OBS_SIZES]
        cells += [("zoom", side, obs, True) for side in IMAGE_SIDES for obs in OBS_SIZES]
        datasets = {side: BenchDataset(originals[side]) for side in IMAGE_SIDES}
        actions = {tool: make_actions(tool, norm_boxes) for tool in TOOLS}
        regions = {(tool, side): discover_regions(datasets[side], actions[tool]) for tool in TOOLS
                   for side in IMAGE_SIDES}

        step_rows = []
        for tool, side, obs, views in cells:
            reg = regions[tool, side]
            timings = race(
                [
                    env_contender(datasets[side], tool, obs, views, actions[tool], budget),
                    floor_contender("floor", originals[side], reg, obs, views, budget),
                    floor_contender("floor_linear", originals[side], reg, obs, views, budget, cv2.INTER_LINEAR),
                    pil_reopen_contender("pil_png", files[side, "png"], reg, obs, views, budget),
                    pil_reopen_contender("pil_jpeg", files[side, "jpeg"], reg, obs, views, budget),
                ],
                cap_s=budget.cell_cap_s, max_iters=budget.max_iters, budget=budget,
            )
            env_t = timings["env"]
            crop_sides = [max(r.box[2] - r.box[0], r.box[3] - r.box[1]) for r in reg]
            lo, hi = min(crop_sides), max(crop_sides)
            step_rows.append({
                "tool": tool, "image": side, "obs": obs, "return_views": views,
                "crop_px": f"{lo}-{hi}" if lo != hi else str(lo),
                **{name: t.as_dict() for name, t in timings.items()},
                "steps_per_s": 1e6 / env_t.us,
                "speedup_vs_png": paired_ratio(timings["pil_png"], env_t),
                "speedup_vs_jpeg": paired_ratio(timings["pil_jpeg"], env_t),
                "env_over_floor": paired_ratio(env_t, timings["floor"]),
                "env_over_linear_floor": paired_ratio(env_t, timings["floor_linear"]),
                "overhead_us": paired_diff_us(env_t, timings["floor"]),
            })
        results["steps_table"] = step_rows

        def label(r):
            return (r["tool"], f"{r['image']}", f"{r['obs']}", "yes" if r["return_views"] else "no")

        print_table(
            "1. env.step throughput (unwrapped MedVRVQAEnv, call-dict actions, source 0)",
            ["tool", "image", "obs", "views", "crop px", "steps", "rounds", "us/step", "fastest blk", "slowest blk",
             "steps/s"],
            [(*label(r), r["crop_px"], r["env"]["calls"], r["env"]["blocks"], fmt_us(r["env"]["median_us"]),
              fmt_us(r["env"]["min_block_us"]), fmt_us(r["env"]["max_block_us"]), f"{r['steps_per_s']:,.0f}")
             for r in step_rows],
            [f"views=yes: return_views=True (info['views'] holds the full-size view: zoom {VIEW_SIZE} px longest side).",
             "episodes are reset (untimed) before each block, so an episode holds at most one block of steps."],
        )
        print_table(
            "2. env.step vs re-open the file with PIL every call, crop, resize bicubic (same output sizes)",
            ["tool", "image", "obs", "views", "env us", "PIL PNG us", "speedup", "PIL JPEG us", "speedup"],
            [(*label(r), fmt_us(r["env"]["median_us"]), fmt_us(r["pil_png"]["median_us"]),
              fmt_x(r["speedup_vs_png"]), fmt_us(r["pil_jpeg"]["median_us"]), fmt_x(r["speedup_vs_jpeg"]))
             for r in step_rows],
            ["speedup = PIL time / env time, median of per-round ratios (>1: the env is faster). The PIL path makes the obs-size image, plus the"
             f" view-size image ({VIEW_SIZE} px longest side) on views=yes rows, as numpy arrays.",
             "PNG: "
             + ", ".join(f"{s} px {os.path.getsize(files[s, 'png']) / 1e6:.1f} MB" for s in IMAGE_SIDES)
             + "; JPEG q90: "
             + ", ".join(f"{s} px {os.path.getsize(files[s, 'jpeg']) / 1e6:.2f} MB" for s in IMAGE_SIDES)
             + " (RGB files, re-read from the OS page cache)."],
        )
        print_table(
            "3. env.step vs the floor: one bare resize of the crop slice to the obs size (the env's resampler)",
            ["tool", "image", "obs", "views", "env us", "floor us", "env/floor", "overhead us", "<=2x",
             "LINEAR floor us", "env/LINEAR"],
            [(*label(r), fmt_us(r["env"]["median_us"]), fmt_us(r["floor"]["median_us"]),
              fmt_x(r["env_over_floor"]), fmt_us(r["overhead_us"]), "yes" if r["env_over_floor"] <= 2 else "NO",
              fmt_us(r["floor_linear"]["median_us"]), fmt_x(r["env_over_linear_floor"]))
             for r in step_rows],
            ["floor: medvr_env.imaging.resize(original[y1:y2, x1:x2], (obs, obs)), the env's resampler (block-average"
             " then INTER_AREA to shrink, INTER_CUBIC to magnify); views=yes rows add the view-size resize.",
             "env/floor and overhead (= env - floor: everything in the step but that resize) are medians over rounds.",
             "LINEAR floor: the same resize(s) with INTER_LINEAR, for scale."],
        )

    # ---------------------------------------------------------------- 4
    big = originals[2048]
    res_rows = []
    interps = (("AREA", cv2.INTER_AREA), ("LINEAR", cv2.INTER_LINEAR), ("CUBIC", cv2.INTER_CUBIC))
    for crop in (128, 256, 512):
        y0 = x0 = (big.shape[0] - crop) // 2
        region = big[y0 : y0 + crop, x0 : x0 + crop]  # a slice of the cached original, as the env cuts it
        pil_img = Image.fromarray(np.ascontiguousarray(region))
        pil_img.load()
        for out in (224, 448):
            contenders = [
                Contender(f"cv2_{name.lower()}", lambda i, flag=flag, out=out: cv2.resize(region, (out, out),
                                                                                          interpolation=flag),
                          target_block_s=budget.resampler_cap_s / 10)
                for name, flag in interps
            ]
            contenders.append(Contender("pil_bicubic", lambda i, out=out: pil_img.resize((out, out), Image.BICUBIC),
                                        target_block_s=budget.resampler_cap_s / 10))
            t = race(contenders, cap_s=budget.resampler_cap_s * len(contenders), max_iters=10**9, budget=budget)
            row: dict[str, Any] = {"crop": crop, "out": out}
            row.update({f"{name}_us": timing.us for name, timing in t.items()})
            row.update({f"pil_over_{name}": paired_ratio(t["pil_bicubic"], t[name]) for name in t if name != "pil_bicubic"})
            res_rows.append(row)
    results["resampler_table"] = res_rows
    print_table(
        "4. resampler: one resize of a square crop (cv2 on the numpy slice, PIL on an in-memory PIL image)",
        ["crop", "out", "cv2 AREA us", "cv2 LINEAR us", "cv2 CUBIC us", "PIL BICUBIC us", "PIL/AREA", "PIL/LINEAR",
         "PIL/CUBIC"],
        [(r["crop"], r["out"], fmt_us(r["cv2_area_us"]), fmt_us(r["cv2_linear_us"]), fmt_us(r["cv2_cubic_us"]),
          fmt_us(r["pil_bicubic_us"]), fmt_x(r["pil_over_cv2_area"]), fmt_x(r["pil_over_cv2_linear"]),
          fmt_x(r["pil_over_cv2_cubic"]))
         for r in res_rows],
        [f"cv2 threads: {cv2.getNumThreads()} (medvr_env.imaging sets 1). ratio = PIL time / cv2 time.",
         "crop > out shrinks (the env uses AREA); crop < out magnifies (the env uses CUBIC)."],
    )

    # ---------------------------------------------------------------- 5
    print_table(
        f"5. resident memory of {N_LIVE_ENVS} live envs on the 2048 px original (obs 224; reset + one zoom each)",
        ["scenario", "envs", "RSS before MB", "RSS after MB", "total MB", "MB/env", "view cache MB/env"],
        [(r["scenario"], r["envs"], f"{r['rss_before_mb']:.1f}", f"{r['rss_after_mb']:.1f}",
          f"{r['total_mb']:.1f}", f"{r['mb_per_env']:.2f}", f"{r['view_cache_mb_per_env']:.2f}") for r in mem],
        [f"one 2048x2048 RGB original = {big.nbytes / 2**20:.1f} MB; RSS = VmRSS from /proc/self/status after"
         " gc.collect() and malloc_trim(0), measured before the timing runs.",
         "the envs, their reset/step observations and infos stay referenced while RSS is read.",
         "view cache: bytes of the episodes' cached delivered-size views (Episode._pixels; return_views=True"
         " renders view 0 at max_view_side and the zoom view at view_size)."],
    )

    elapsed = time.perf_counter() - t_start
    results["elapsed_s"] = elapsed
    print(f"\ntotal time {elapsed:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
