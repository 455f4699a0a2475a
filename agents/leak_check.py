"""First-view leak check: can global image statistics of the first view answer the questions?

If a linear model on whole-image statistics (grey-level histogram, mean, spread, percentiles, edge
energy, per-quadrant and per-half statistics) beats the answer prior, the task leaks answers through
something other than the findings (say, images with a finding being brighter overall), and looking
closer would not be needed to answer. :func:`leak_check` fits one ridge regression per question type
on train-split first views (one-hot answers, least squares, NumPy only) and scores it on the test
split against ``max(train-majority accuracy, 1 / K)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from medvr_env import imaging

OBS_SIZE = 224


def global_statistics(image: np.ndarray) -> np.ndarray:
    """Whole-image and coarse statistics of a first view (uint8 (H, W, 3) or (H, W)), as a float vector."""
    gray = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    hist = np.histogram(gray, bins=32, range=(0, 256))[0] / gray.size
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    feats = [hist, [gray.mean(), gray.std()], np.percentile(gray, [1, 5, 50, 95, 99]), [np.mean(lap * lap) ** 0.5]]
    h, w = gray.shape
    top, bottom = gray[: h // 2], gray[h // 2 :]
    for part in (top[:, : w // 2], top[:, w // 2 :], bottom[:, : w // 2], bottom[:, w // 2 :]):
        feats.append([part.mean(), part.std(), *np.percentile(part, [1, 99])])
    for part in (gray[:, : w // 2], gray[:, w // 2 :]):
        feats.append(np.percentile(part, [0.5, 99.5]))
    return np.concatenate([np.asarray(f, np.float64).ravel() for f in feats])


def first_view_features(dataset, count: int, progress: bool = False) -> tuple[np.ndarray, list]:
    """Statistics of the first view (the whole image at 224 px, as the env shows it) of samples 0..count-1."""
    rows, samples = [], []
    for i in tqdm(range(min(count, len(dataset))), desc=f"{dataset.split} first views", disable=not progress):
        sample = dataset[i]
        view = imaging.resize(np.asarray(dataset.load_image(sample)), (OBS_SIZE, OBS_SIZE))
        rows.append(global_statistics(view))
        samples.append(sample)
    return np.asarray(rows), samples


def ridge_predict(x_train: np.ndarray, labels: Sequence[str], x_test: np.ndarray, ridge: float = 1.0) -> list[str]:
    """One-vs-rest ridge least squares on standardised features; the label with the largest score."""
    classes = sorted(set(labels))
    mean, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    a = np.hstack([(x_train - mean) / sd, np.ones((len(x_train), 1))])
    b = np.hstack([(x_test - mean) / sd, np.ones((len(x_test), 1))])
    y = np.array([[float(label == c) for c in classes] for label in labels])
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y)
    return [classes[int(k)] for k in np.argmax(b @ w, axis=1)]


@dataclass(frozen=True)
class LeakResult:
    """One question type: the regression's test accuracy against the prior."""

    question_type: str
    n_train: int
    n_test: int
    accuracy: float
    prior: float  # max(train-majority accuracy on test, 1 / K)

    @property
    def excess(self) -> float:
        return self.accuracy - self.prior


def leak_check(x_train: np.ndarray, train_samples: list, x_test: np.ndarray, test_samples: list,
               answer_sets: dict[str, Sequence[str]], ridge: float = 10.0) -> list[LeakResult]:
    """Per question type, fit on train and score on test (see the module docstring)."""
    out = []
    for qtype in sorted({s.question_type for s in test_samples}):
        tr = [i for i, s in enumerate(train_samples) if s.question_type == qtype]
        te = [i for i, s in enumerate(test_samples) if s.question_type == qtype]
        if len(tr) < 5 or not te:
            continue
        labels = [train_samples[i].answer for i in tr]
        truth = [test_samples[i].answer for i in te]
        predicted = ridge_predict(x_train[tr], labels, x_test[te], ridge)
        majority = max(set(labels), key=labels.count)
        prior = max(float(np.mean([t == majority for t in truth])), 1.0 / len(answer_sets[qtype]))
        accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))
        out.append(LeakResult(qtype, len(tr), len(te), accuracy, prior))
    return out


def pooled(results: Sequence[LeakResult]) -> tuple[float, float, int]:
    """``(accuracy, prior, n)`` over all question types, weighted by their test counts."""
    n = sum(r.n_test for r in results)
    return (sum(r.accuracy * r.n_test for r in results) / n, sum(r.prior * r.n_test for r in results) / n, n)


__all__ = ["LeakResult", "first_view_features", "global_statistics", "leak_check", "pooled", "ridge_predict"]
