#!/usr/bin/env python
"""Where the answers of VQA-RAD test come from: simple non-VLM baselines, graded like ``medvr eval``.

VQA-RAD's official test split asks about images that are all in the train split (203 of 203), often in a
paraphrase of a train question. So a method can score well by recognising the image and the question's words,
without reading anything new off the pixels. These baselines measure how far that goes, to put a VLM's number
(and the 60 % target of the tiny VLM) in context:

- ``question nearest neighbour``: the answer of the most similar train question (``difflib`` ratio), any image;
- ``same-image question nearest neighbour``: the same, among the train questions about the same image;
- ``bag-of-words MLP``: a two-layer MLP from the question's word set to one of the train answers (text only);
- ``bag-of-words + image MLP``: the same with EfficientNet-Lite0's pooled ImageNet features of the image added.

MLPs are trained on the train split only, for a fixed number of epochs (no test-set selection), over several
seeds; the table gives their mean and standard deviation. Answers are graded with
:func:`medvr_env.grading.grade_answer`, as ``medvr eval`` grades.

Run::

    python benchmarks/vqa_rad_baselines.py                   # ~2 min on 2 cores; --seeds 1 for a quick look
    python benchmarks/vqa_rad_baselines.py --data-root PATH  # VQA-RAD elsewhere ($MEDVR_DATA/vqa_rad by default)
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medvr_env.data.files import DatasetNotFoundError
from medvr_env.data.vqa_rad import VQARADDataset
from medvr_env.grading import grade_answer, normalize_answer

WORD_RE = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def score(samples: Sequence, predictions: Sequence[str]) -> dict[str, float]:
    """Accuracy (%) overall, closed and open."""
    right: dict[str, list[int]] = defaultdict(list)
    for s, p in zip(samples, predictions):
        ok = int(grade_answer(p, s.answer, answer_type=s.answer_type).correct)
        right["all"].append(ok)
        right[str(s.answer_type).lower()].append(ok)
    return {k: 100.0 * float(np.mean(v)) for k, v in right.items()}


def nearest_question(train: Sequence, test: Sequence, same_image: bool) -> list[str]:
    by_image: dict[str, list] = defaultdict(list)
    for s in train:
        by_image[s.image_key].append(s)
    out = []
    for s in test:
        pool = by_image.get(s.image_key) or train if same_image else train
        matcher = difflib.SequenceMatcher(None)
        matcher.set_seq2(s.question.lower())  # difflib caches its analysis of the second sequence
        best, best_ratio = pool[0], -1.0
        for t in pool:
            matcher.set_seq1(t.question.lower())
            # the cheap upper bounds skip most candidates; ties keep the first, as max() would
            if matcher.real_quick_ratio() <= best_ratio or matcher.quick_ratio() <= best_ratio:
                continue
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = t, ratio
        out.append(best.answer)
    return out


def pooled_image_features(dataset: VQARADDataset, samples: Sequence) -> torch.Tensor:
    """EfficientNet-Lite0's pooled head features (1280) of each sample's image at 224 px, one row per sample."""
    from PIL import Image

    from agents.uncertainty.backbone import load_pretrained, normalize

    net = load_pretrained()
    cache: dict[str, torch.Tensor] = {}
    rows = []
    for s in samples:
        if s.image_key not in cache:
            pixels = dataset.load_image(s)
            image = Image.fromarray(pixels).convert("RGB").resize((224, 224), Image.BICUBIC)
            x = normalize(torch.from_numpy(np.asarray(image).copy()).unsqueeze(0))
            with torch.inference_mode():
                cache[s.image_key] = net.head_features(x).mean(dim=(2, 3))[0]
        rows.append(cache[s.image_key])
    return torch.stack(rows)


def mlp_predictions(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, classes: int, seed: int,
                    epochs: int = 60) -> np.ndarray:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(x_train.shape[1], 512), torch.nn.GELU(),
                              torch.nn.Dropout(0.3), torch.nn.Linear(512, classes))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(y_train), generator=gen).split(32):
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net(x_test).argmax(1).numpy()


def run(data_root: str | None, seeds: int) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    train_set = VQARADDataset(split="train", data_root=data_root)
    test_set = VQARADDataset(split="test", data_root=data_root)
    train, test = list(train_set.samples), list(test_set.samples)
    shared = len({s.image_key for s in test} & {s.image_key for s in train})
    print(f"VQA-RAD: {len(train)} train / {len(test)} test questions; {shared} of "
          f"{len({s.image_key for s in test})} test images are also train images", file=sys.stderr)
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    for name, same in (("question nearest neighbour", False), ("same-image question nearest neighbour", True)):
        rows.append((name, score(test, nearest_question(train, test, same)), {}))

    vocab = {w: i for i, w in enumerate(sorted({w for s in train for w in words(s.question)}))}

    def bag(samples: Sequence) -> torch.Tensor:
        x = torch.zeros(len(samples), len(vocab))
        for i, s in enumerate(samples):
            for w in words(s.question):
                if w in vocab:
                    x[i, vocab[w]] = 1.0
        return x

    answers: dict[str, str] = {}
    for s in train:
        answers.setdefault(normalize_answer(s.answer), s.answer)
    keys = list(answers)
    index = {k: i for i, k in enumerate(keys)}
    y = torch.tensor([index[normalize_answer(s.answer)] for s in train])
    text_train, text_test = bag(train), bag(test)
    img_train, img_test = pooled_image_features(train_set, train), pooled_image_features(test_set, test)
    mean, std = img_train.mean(0), img_train.std(0) + 1e-4
    inputs: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {
        "bag-of-words MLP": lambda: (text_train, text_test),
        "bag-of-words + image MLP": lambda: (torch.cat([text_train, (img_train - mean) / std], 1),
                                             torch.cat([text_test, (img_test - mean) / std], 1)),
    }
    for name, make in inputs.items():
        x_train, x_test = make()
        runs = [score(test, [answers[keys[i]] for i in mlp_predictions(x_train, y, x_test, len(keys), seed)])
                for seed in range(seeds)]
        rows.append((name, {k: float(np.mean([r[k] for r in runs])) for k in runs[0]},
                     {k: float(np.std([r[k] for r in runs])) for k in runs[0]}))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="VQA-RAD folder (default: $MEDVR_DATA/vqa_rad)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per MLP (mean and std are printed)")
    args = parser.parse_args(argv)
    try:
        rows = run(args.data_root, max(1, args.seeds))
    except DatasetNotFoundError as exc:
        if args.data_root:  # the user named a folder: that is a mistake, not a machine without the data
            print(f"error: --data-root {args.data_root}: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"skipped: {exc}", file=sys.stderr)
        return 0
    print("\n| baseline (VQA-RAD test, 451 questions) | overall | closed | open |\n|---|---|---|---|")
    for name, mean, std in rows:
        cell = (lambda k: f"{mean[k]:.1f} ± {std[k]:.1f}") if std else (lambda k: f"{mean[k]:.1f}")
        print(f"| {name} | {cell('all')} | {cell('closed')} | {cell('open')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
