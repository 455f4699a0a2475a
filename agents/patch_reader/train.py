"""Train the patch reader on the procedural train split, and measure it on the test split.

``medvr train-patch-reader`` (or ``python -m agents.patch_reader.train``) builds the reader the
``scripted`` and ``no-zoom`` agents use, into the cache (:func:`~agents.patch_reader.store.default_path`)
unless ``--out`` says otherwise; the agents also build it there on first use. A few CPU minutes.

Examples come from views made exactly as the env makes observations (the region of the original,
resized to the observation size): per sample the whole image, a 2x, two 4x and an 8x zoom that hold
a random finding (at a random offset), and a random 4x zoom; at 224 px observations (and 128 px for a
quarter of the samples, what the SB3 ids show). In each view the candidate spots
(:func:`~agents.patch_reader.candidates.find_candidates`, the detector the agents use) near a finding are
labelled with its kind, the others are background (the strongest ones are kept: hard negatives); every
finding in the view also gives a patch at its centre (jittered). Train-split backgrounds only; the
report's numbers are on the test split's other anatomy.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medvr_env import imaging
from medvr_env.boxes import Box
from medvr_env.data.procedural import ProceduralDataset

from ..runner import unwritable_folder
from .candidates import CLASSES, ViewGeometry, cut_patches, find_candidates, to_gray
from .model import PatchReader, PatchReaderConfig

ZOOMS = {"first": 1.0, "2x": 0.5, "4x": 0.25, "8x": 0.125}  # view side, fraction of the image side


@dataclass
class PatchSet:
    """Patches with their labels, magnification feature and the zoom level they were read at."""

    patches: np.ndarray  # (N, P, P) float16
    labels: np.ndarray  # (N,) class index
    scales: np.ndarray  # (N,) float32
    zooms: np.ndarray  # (N,) index into ZOOMS
    candidate: np.ndarray  # (N,) True for candidate spots (what the agents classify), False for planted centres

    def __len__(self) -> int:
        return len(self.labels)


def _findings(sample) -> list[tuple[float, float, float, str]]:
    """``(x, y, size, kind)`` of every finding, in image fractions."""
    size = float(sample.meta["image_size"])
    out = []
    for f in sample.meta["findings"]:
        x1, y1, x2, y2 = f["box"]
        out.append(((x1 + x2) / 2 / size, (y1 + y2) / 2 / size, max(x2 - x1, y2 - y1) / size, f["kind"]))
    return out


def _box_holding(rng: np.random.Generator, side: float, x: float, y: float, margin: float) -> tuple[float, ...]:
    """A ``side`` x ``side`` box (fractions) inside the image holding ``(x, y)`` at a random offset."""
    lo_x, hi_x = max(0.0, x + margin - side), min(1.0 - side, x - margin)
    lo_y, hi_y = max(0.0, y + margin - side), min(1.0 - side, y - margin)
    x1 = rng.uniform(lo_x, hi_x) if hi_x > lo_x else min(max(x - side / 2, 0.0), 1.0 - side)
    y1 = rng.uniform(lo_y, hi_y) if hi_y > lo_y else min(max(y - side / 2, 0.0), 1.0 - side)
    return x1, y1, x1 + side, y1 + side


def sample_views(rng: np.random.Generator, findings: Sequence[tuple[float, float, float, str]],
                 obs_size: int) -> list[tuple[str, tuple[float, ...], int]]:
    """``(zoom name, box fractions, observation size)`` of the views one training sample is read in."""
    views = [("first", (0.0, 0.0, 1.0, 1.0), obs_size)]
    for name in ("2x", "4x", "4x", "8x"):
        side = ZOOMS[name]
        if findings:
            x, y, size, _ = findings[int(rng.integers(len(findings)))]
            views.append((name, _box_holding(rng, side, x, y, size), obs_size))
    x1, y1 = rng.uniform(0, 0.75, 2)
    views.append(("4x", (x1, y1, x1 + 0.25, y1 + 0.25), obs_size))
    return views


def view_patches(original: np.ndarray, box: tuple[float, ...], obs_size: int,
                 findings: Sequence[tuple[float, float, float, str]], rng: np.random.Generator,
                 hard_negatives: int = 6, random_negatives: int = 2, jitter: float = 4.0 / 1024):
    """Patches, labels and candidate flags of one view rendered as the env renders it."""
    h, w = original.shape[:2]
    pix = Box(int(round(box[0] * w)), int(round(box[1] * h)), int(round(box[2] * w)), int(round(box[3] * h)))
    image = imaging.resize(imaging.region(original, pix), (obs_size, obs_size))
    geometry = ViewGeometry((pix.x1 / w, pix.y1 / h, pix.x2 / w, pix.y2 / h), obs_size, obs_size)
    gray = to_gray(image)
    points, labels, flags = [], [], []
    negatives = []
    pixel = 1.0 / geometry.pixels_per_fraction
    for px, py, _, strength in find_candidates(gray, geometry):
        fx, fy = geometry.to_image(px, py)
        label = 0
        for x, y, size, kind in findings:
            if math.hypot(fx - x, fy - y) <= max(0.6 * size, 1.2 * pixel):
                label = CLASSES.index(kind)
                break
        if label:
            points.append((px, py))
            labels.append(label)
            flags.append(True)
        else:
            negatives.append((strength, px, py))
    negatives.sort(reverse=True)
    chosen = negatives[:hard_negatives]
    rest = negatives[hard_negatives:]
    if rest and random_negatives:
        chosen += [rest[int(i)] for i in rng.choice(len(rest), min(random_negatives, len(rest)), replace=False)]
    for _, px, py in chosen:
        points.append((px, py))
        labels.append(0)
        flags.append(True)
    for x, y, size, kind in findings:  # every finding in the view, at its (jittered) centre
        if geometry.contains(x, y, 0.5 * size):
            jx, jy = rng.uniform(-jitter, jitter, 2)
            points.append(geometry.to_view(x + jx, y + jy))
            labels.append(CLASSES.index(kind))
            flags.append(False)
    patches = cut_patches(gray, points, geometry) if points else np.zeros((0, 32, 32), np.float32)
    return patches, np.asarray(labels, np.int64), geometry.scale_feature, np.asarray(flags, bool)


def build_patch_set(dataset: ProceduralDataset, seed: int = 0, small_obs_share: float = 0.25,
                    progress: bool = True, desc: str = "patches") -> PatchSet:
    """Every view's patches of every sample of ``dataset`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"patches": [], "labels": [], "scales": [], "zooms": [], "candidate": []}
    names = list(ZOOMS)
    for i in tqdm(range(len(dataset)), desc=desc, disable=not progress, mininterval=1.0):
        sample = dataset[i]
        original = dataset.load_image(sample)
        findings = _findings(sample)
        obs_size = 128 if rng.random() < small_obs_share else 224
        for name, box, size in sample_views(rng, findings, obs_size):
            patches, labels, scale, flags = view_patches(original, box, size, findings, rng)
            parts["patches"].append(patches.astype(np.float16))
            parts["labels"].append(labels)
            parts["scales"].append(np.full(len(labels), scale, np.float32))
            parts["zooms"].append(np.full(len(labels), names.index(name), np.int8))
            parts["candidate"].append(flags)
    return PatchSet(*(np.concatenate(parts[k]) for k in ("patches", "labels", "scales", "zooms", "candidate")))


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random flips and quarter turns (finding kinds do not depend on orientation)."""
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    if torch.rand(()) < 0.5:
        x = x.flip(-2)
    return torch.rot90(x, int(torch.randint(0, 4, ())), dims=(-2, -1))


def fit(reader: PatchReader, data: PatchSet, epochs: int = 6, batch_size: int = 256, lr: float = 2e-3,
        seed: int = 0, progress: bool = True) -> list[float]:
    """Train ``reader`` in place; returns the mean training loss of each epoch."""
    torch.manual_seed(seed)
    model = reader.model
    x_all = torch.from_numpy(data.patches.astype(np.float32))
    y_all = torch.from_numpy(data.labels)
    s_all = torch.from_numpy(data.scales)
    counts = np.bincount(data.labels, minlength=len(CLASSES)).astype(np.float64)
    balance = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)  # inverse sqrt frequency
    weights = torch.tensor(balance, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights / weights[weights > 0].mean())
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(data) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(steps, 1))
    losses = []
    bar = tqdm(total=steps, desc="training the patch reader", disable=not progress, mininterval=1.0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data))
        total, n = 0.0, 0
        for i in range(0, len(data), batch_size):
            idx = order[i : i + batch_size]
            logits = model(_augment(x_all[idx]), s_all[idx])
            loss = loss_fn(logits, y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
            n += len(idx)
            bar.update(1)
        losses.append(total / max(n, 1))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


def measure(reader: PatchReader, data: PatchSet, threshold: float = 0.5) -> dict[str, Any]:
    """Per zoom level: kind accuracy on findings, finding-vs-background accuracy, and the false-positive rate
    (share of background candidate spots read as a finding with probability >= ``threshold``)."""
    probs = reader.classify(data.patches.astype(np.float32), data.scales)
    pred = probs.argmax(axis=1)
    finding_prob = 1.0 - probs[:, 0]
    out: dict[str, Any] = {}
    for z, name in enumerate(ZOOMS):
        at = data.zooms == z
        if not at.any():
            continue
        found = at & (data.labels > 0)
        background = at & (data.labels == 0) & data.candidate
        kind_pred = probs[:, 1:].argmax(axis=1) + 1
        out[name] = {
            "findings": int(found.sum()),
            "background_spots": int(background.sum()),
            "kind_accuracy": float((kind_pred[found] == data.labels[found]).mean()) if found.any() else None,
            "class_accuracy": float((pred[at] == data.labels[at]).mean()),
            "recall": float(((pred[found] > 0) & (finding_prob[found] >= threshold)).mean()) if found.any() else None,
            "false_positive_rate": float(((pred[background] > 0) & (finding_prob[background] >= threshold)).mean())
            if background.any() else None,
        }
    return out


def train_patch_reader(train_samples: int = 2000, test_samples: int = 300, epochs: int = 6, seed: int = 0,
                       config: PatchReaderConfig | None = None, progress: bool = True,
                       image_size: int = 1024) -> tuple[PatchReader, dict[str, Any]]:
    """Build patches from the train split, train, and measure on the test split; returns reader and report."""
    t0 = time.time()
    torch.manual_seed(seed)
    train_set = build_patch_set(ProceduralDataset("train", num_samples=train_samples, seed=0, image_size=image_size),
                                seed=seed, progress=progress, desc="train-split patches")
    reader = PatchReader(config or PatchReaderConfig())
    losses = fit(reader, train_set, epochs=epochs, seed=seed, progress=progress)
    report: dict[str, Any] = {"train_samples": train_samples, "train_patches": len(train_set), "epochs": epochs,
                              "losses": [round(v, 4) for v in losses]}
    if test_samples:
        test_set = build_patch_set(ProceduralDataset("test", num_samples=test_samples, seed=0, image_size=image_size),
                                   seed=seed + 1, small_obs_share=0.0, progress=progress, desc="test-split patches")
        report["test"] = measure(reader, test_set)
    report["seconds"] = round(time.time() - t0, 1)
    reader.config.meta.update(report=report, generator=_generator())
    return reader, report


def _generator() -> str:
    from medvr_env.data.procedural import GENERATOR

    return GENERATOR


def format_report(report: dict[str, Any]) -> str:
    """The test-split measurements as a Markdown table."""
    lines = ["| view | findings | kind accuracy | recall | background spots | false-positive rate |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for name, m in report.get("test", {}).items():
        lines.append(f"| {name} | {m['findings']} | {fmt(m['kind_accuracy'])} | {fmt(m['recall'])} "
                     f"| {m['background_spots']} | {fmt(m['false_positive_rate'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from .store import default_path

    parser = argparse.ArgumentParser(prog="medvr train-patch-reader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"checkpoint path (default: {default_path()})")
    parser.add_argument("--train-samples", type=int, default=2000, help="train-split samples (default: 2000)")
    parser.add_argument("--test-samples", type=int, default=300, help="test-split samples measured (default: 300)")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the patches (default: 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.train_samples < 1 or args.epochs < 1 or args.test_samples < 0:
        parser.error("--train-samples and --epochs must be >= 1, --test-samples >= 0")
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out) if args.out else default_path()
    problem = unwritable_folder(out.parent)
    if problem:  # found now, not after minutes of training
        parser.error(f"--out {out}: {problem}")
    reader, report = train_patch_reader(args.train_samples, args.test_samples, args.epochs, args.seed,
                                        progress=not args.no_progress)
    reader.save(out)
    print(format_report(report))
    print(f"\npatch reader: {out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
