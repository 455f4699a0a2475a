"""Train the image reader on a dataset's training split; one command::

    python -m agents.uncertainty.train --out ~/.cache/medvr/reader.pt

Steps: render each training sample's views (:func:`~agents.uncertainty.views.training_views`:
the whole image, its quadrants, two random sixteenths), encode them once with the
frozen backbone (features are cached, optionally on disk with ``--features-cache``),
fit the answer head on (view, question) -> answer with the sample's answer as the
label for every view (so a view that cannot show the answer learns to be unsure),
then report accuracy and mean entropy per zoom depth on the test split, and save
the checkpoint and a JSON report atomically.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from medvr_env.data.registry import make_dataset
from medvr_env.data.sample import Sample, VQADataset
from medvr_env.wrappers.sb3_actions import answer_vocabulary

from .estimator import default_checkpoint_path
from .reader import AnswerHead, ImageReader, ReaderConfig
from .views import ViewSpec, render, training_views

ViewPlan = Callable[[Sample, tuple[int, int], np.random.Generator], list[ViewSpec]]


@dataclass
class FeatureSet:
    """Encoded views, one row per view, with the question each view is asked under."""

    features: np.ndarray  # (N, F) float16
    sample_index: np.ndarray  # (N,) position in the dataset
    view_box: np.ndarray  # (N, 4) fractions of the original
    depth: np.ndarray  # (N,) zoom depth
    covers_target: np.ndarray  # (N,) the view holds every evaluation box's centre (diagnostics only)
    samples: dict[int, Sample]

    def __len__(self) -> int:
        return len(self.sample_index)


def default_views(deep_views: int = 2) -> ViewPlan:
    return lambda sample, size, rng: training_views(size, rng, deep_views)


def encode_dataset(
    reader: ImageReader,
    dataset: VQADataset,
    indices: Sequence[int],
    plan: ViewPlan,
    seed: int = 0,
    progress: bool = True,
    desc: str = "encoding views",
) -> FeatureSet:
    """Render and encode the planned views of ``dataset[i]`` for ``i`` in ``indices``.

    Rendering (numpy / OpenCV) runs one sample ahead in a thread while the backbone
    encodes the previous one.
    """
    rng = np.random.default_rng(seed)
    res = reader.config.resolution

    def prepare(i: int):
        sample = dataset[i]
        original = dataset.load_image(sample)
        size = (int(original.shape[1]), int(original.shape[0]))
        views = plan(sample, size, rng)
        pixels = np.stack([render(original, v.box, res) for v in views])
        return i, sample, size, views, pixels

    feats, rows = [], []
    samples: dict[int, Sample] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, indices[0]) if len(indices) else None
        for k in tqdm(range(len(indices)), desc=desc, unit="sample", disable=not progress):
            i, sample, size, views, pixels = pending.result()
            pending = pool.submit(prepare, indices[k + 1]) if k + 1 < len(indices) else None
            feats.append(reader.encode_views(pixels).numpy().astype(np.float16))
            samples[i] = sample
            for v in views:
                rows.append((i, v.fractions(size), v.depth, _covers(v, sample)))
    return FeatureSet(
        features=np.concatenate(feats) if feats else np.zeros((0, reader.config.feature_dim), np.float16),
        sample_index=np.array([r[0] for r in rows], dtype=np.int64),
        view_box=np.array([r[1] for r in rows], dtype=np.float32).reshape(-1, 4),
        depth=np.array([r[2] for r in rows], dtype=np.int64),
        covers_target=np.array([r[3] for r in rows], dtype=bool),
        samples=samples,
    )


def _covers(view: ViewSpec, sample: Sample) -> bool:
    if not sample.eval_boxes:
        return False
    b = view.box
    return all(b.x1 <= (x1 + x2) / 2 < b.x2 and b.y1 <= (y1 + y2) / 2 < b.y2 for x1, y1, x2, y2 in sample.eval_boxes)


@dataclass
class Examples:
    features: torch.Tensor
    question_ids: torch.Tensor
    view_box: torch.Tensor
    candidates: torch.Tensor  # bool (N, A)
    labels: torch.Tensor  # (N,), -1 when the answer is not among the reader's answers

    def __len__(self) -> int:
        return len(self.labels)


def make_examples(reader: ImageReader, fs: FeatureSet) -> Examples:
    questions = {i: reader.tokenizer.encode(s.question) for i, s in fs.samples.items()}
    cands = {i: reader.candidates(s.question_type, s.options) for i, s in fs.samples.items()}
    labels = {i: reader.answer_index(s.answer) for i, s in fs.samples.items()}
    idx = fs.sample_index
    n_ids, n_answers = reader.tokenizer.max_tokens, len(reader.config.answers)
    ids = np.stack([questions[i] for i in idx]) if len(idx) else np.zeros((0, n_ids), np.int64)
    masks = np.stack([cands[i] for i in idx]) if len(idx) else np.zeros((0, n_answers), bool)
    return Examples(
        features=torch.from_numpy(fs.features.astype(np.float32)),
        question_ids=torch.from_numpy(ids),
        view_box=torch.from_numpy(fs.view_box),
        candidates=torch.from_numpy(masks),
        labels=torch.tensor([-1 if labels[i] is None else labels[i] for i in idx], dtype=torch.int64),
    )


def type_answers(reader_answers: Sequence[str], samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Question type -> indices of the answers seen for it in training (the candidate rule)."""
    out: dict[str, set[int]] = {}
    lookup = {a: i for i, a in enumerate(reader_answers)}
    for s in samples:
        if s.question_type and not s.options and s.answer in lookup:
            out.setdefault(s.question_type, set()).add(lookup[s.answer])
    return {k: sorted(v) for k, v in sorted(out.items())}


def fit(
    head: AnswerHead,
    train: Examples,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Cross-entropy over the candidate answers; returns the mean loss per epoch."""
    keep = train.labels >= 0
    if not bool(keep.any()):
        raise ValueError("no training example has an answer among the reader's answers")
    feats, ids, boxes = train.features[keep], train.question_ids[keep], train.view_box[keep]
    cands, labels = train.candidates[keep], train.labels[keep]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    history = []
    head.train()
    bar = tqdm(range(epochs), desc="training the answer head", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(labels), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start : start + batch_size]
            logits = head(feats[b], ids[b], boxes[b]).masked_fill(~cands[b], -1e9)
            loss = torch.nn.functional.cross_entropy(logits, labels[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        sched.step()
        history.append(total / len(labels))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    head.eval()
    return history


@torch.inference_mode()
def evaluate(reader: ImageReader, fs: FeatureSet) -> dict[str, Any]:
    """Accuracy and mean normalised entropy per zoom depth, and on views that hold the target (diagnostic)."""
    ex = make_examples(reader, fs)
    logits = reader.head(ex.features, ex.question_ids, ex.view_box).masked_fill(~ex.candidates, -torch.inf)
    probs = torch.softmax(logits, dim=1).numpy()
    cands = ex.candidates.numpy()
    entropy = np.array([ImageReader.normalised_entropy(p, c) for p, c in zip(probs, cands)])
    correct = (probs.argmax(1) == ex.labels.numpy())
    prior = cands / cands.sum(1, keepdims=True)
    out: dict[str, Any] = {}
    groups = {f"depth_{d}": fs.depth == d for d in sorted(set(fs.depth.tolist()))}
    groups["holds_target"] = fs.covers_target & (fs.depth > 0)
    for name, sel in groups.items():
        if sel.any():
            out[name] = {
                "views": int(sel.sum()),
                "accuracy": float(correct[sel].mean()),
                "mean_entropy": float(entropy[sel].mean()),
                "chance": float(prior[sel][np.arange(int(sel.sum())), np.maximum(ex.labels.numpy()[sel], 0)].mean()),
            }
    return out


def train_reader(
    dataset: VQADataset,
    test_dataset: VQADataset | None = None,
    answers: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    plan: ViewPlan | None = None,
    epochs: int = 20,
    seed: int = 0,
    progress: bool = True,
    features_cache: str | Path | None = None,
) -> tuple[ImageReader, dict[str, Any]]:
    """Encode, fit and evaluate; returns the reader and a report (no files written)."""
    t0 = time.time()
    torch.manual_seed(seed)  # the head's initial weights: the same reader from the CLI and from Python
    answers = tuple(answers) if answers is not None else _answers_for(dataset)
    samples = [dataset[i] for i in range(len(dataset))]
    config_kw = dict(config or {})
    cfg = ReaderConfig(answers=answers, type_answers=type_answers(answers, samples), **config_kw)
    reader = ImageReader(cfg)
    plan = plan or default_views()
    train_fs = _cached_encode(reader, dataset, plan, seed, progress, features_cache, "train")
    history = fit(reader.head, make_examples(reader, train_fs), epochs=epochs, seed=seed, progress=progress)
    report: dict[str, Any] = {
        "config": {k: v for k, v in vars(cfg).items() if k not in ("tokenizer",)},
        "train_samples": len(dataset),
        "train_views": len(train_fs),
        "loss_history": history,
        "train": evaluate(reader, train_fs),
    }
    if test_dataset is not None:
        test_fs = _cached_encode(reader, test_dataset, plan, seed + 1, progress, features_cache, "test")
        report["test_samples"] = len(test_dataset)
        report["test"] = evaluate(reader, test_fs)
    report["seconds"] = round(time.time() - t0, 1)
    return reader, report


def _answers_for(dataset: VQADataset) -> tuple[str, ...]:
    try:
        return answer_vocabulary(dataset)
    except ValueError:
        seen: list[str] = []
        for i in range(len(dataset)):
            a = dataset[i].answer
            if a not in seen:
                seen.append(a)
        return tuple(seen)


def _cached_encode(reader, dataset, plan, seed, progress, cache, tag) -> FeatureSet:
    """Encode, or load the same encoding from ``cache`` (a folder) when its key matches."""
    if cache is None:
        return encode_dataset(reader, dataset, range(len(dataset)), plan, seed, progress, f"encoding {tag} views")
    key = json.dumps({"dataset": repr(dataset), "resolution": reader.config.resolution,
                      "stages": reader.config.stages, "pool": reader.config.pool, "seed": seed}, sort_keys=True)
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{tag}-{hash_key(key):08x}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        if str(data["key"]) == key:
            return FeatureSet(data["features"], data["sample_index"], data["view_box"], data["depth"],
                              data["covers_target"], {int(i): dataset[int(i)] for i in np.unique(data["sample_index"])})
    fs = encode_dataset(reader, dataset, range(len(dataset)), plan, seed, progress, f"encoding {tag} views")
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, key=key, features=fs.features, sample_index=fs.sample_index, view_box=fs.view_box,
             depth=fs.depth, covers_target=fs.covers_target)
    tmp.replace(path)
    return fs


def hash_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agents.uncertainty.train",
        description="Train the EfficientNet-Lite0 image reader whose answer entropy fills MedVR's entropy channel.",
    )
    p.add_argument("--out", default=str(default_checkpoint_path()), help="checkpoint path (default: %(default)s)")
    p.add_argument("--report", default=None, help="JSON report path (default: next to --out, .json)")
    p.add_argument("--dataset", default="procedural", help="dataset name or package.module:Class (default: procedural)")
    p.add_argument("--dataset-kwarg", action="append", default=[], metavar="KEY=JSON", help="extra dataset kwargs")
    p.add_argument("--train-samples", type=int, default=1200, help="training-split samples (default: 1200)")
    p.add_argument("--test-samples", type=int, default=300, help="test-split samples to evaluate on; 0 skips")
    p.add_argument("--resolution", type=int, default=128, help="side of the views the backbone reads (default: 128)")
    p.add_argument("--epochs", type=int, default=20, help="head training epochs (default: 20)")
    p.add_argument("--deep-views", type=int, default=2, help="random depth-2 views per sample (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: 1; two threads on a busy 2-core machine ran ~80x slower)")
    p.add_argument("--features-cache", default=None, help="folder to keep encoded views in between runs")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("train_samples", "resolution", "epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1")
    if args.threads < 1:
        raise SystemExit("error: --threads must be at least 1")
    torch.set_num_threads(args.threads)
    extra = {}
    for pair in args.dataset_kwarg:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --dataset-kwarg expects KEY=JSON, got {pair!r}")
        extra[key] = json.loads(value)
    train_ds = make_dataset(args.dataset, split="train", num_samples=args.train_samples, **extra)
    test_ds = None
    if args.test_samples:
        test_ds = make_dataset(args.dataset, split="test", num_samples=args.test_samples, **extra)
    reader, report = train_reader(
        train_ds, test_ds, config={"resolution": args.resolution}, plan=default_views(args.deep_views),
        epochs=args.epochs, seed=args.seed, progress=not args.no_progress, features_cache=args.features_cache,
    )
    out = reader.save(args.out, extra={"report": report})
    from agents.runner import write_json

    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    write_json(report_path, report)
    print(f"\nreader saved to {out}\nreport: {report_path}")
    for split in ("train", "test"):
        for group, row in report.get(split, {}).items():
            print(f"{split:<5} {group:<13} views {row['views']:>5}  accuracy {row['accuracy']:.3f}  "
                  f"(chance {row['chance']:.3f})  mean entropy {row['mean_entropy']:.3f}")
    print(f"\nuse it: MEDVR_READER={out} and gym.make(..., uncertainty_estimator='agents.uncertainty:ReaderEstimator')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
