"""First-view leak check of the procedural task: global image statistics must not answer the questions."""

from __future__ import annotations

import numpy as np
import pytest

from agents.leak_check import first_view_features, global_statistics, leak_check, pooled, ridge_predict
from medvr_env.data.procedural import ANSWER_SETS, ProceduralDataset


@pytest.fixture(scope="module")
def features():
    # 256 px originals: a finding spans 2.4-3.1 px, as in the 224 px first view of a 1024 px original
    train = ProceduralDataset("train", num_samples=300, image_size=256)
    test = ProceduralDataset("test", num_samples=150, image_size=256)
    return (*first_view_features(train, 300), *first_view_features(test, 150))


def test_global_statistics_of_the_first_view_do_not_beat_the_prior(features):
    x_train, train, x_test, test = features
    results = leak_check(x_train, train, x_test, test, ANSWER_SETS)
    assert {r.question_type for r in results} == set(ANSWER_SETS)
    accuracy, prior, n = pooled(results)
    assert n == 150
    assert accuracy <= prior + 0.08, [(r.question_type, r.accuracy, r.prior) for r in results]


def test_the_check_finds_a_planted_leak(features):
    """The same regression, given one feature that carries the answer, beats the prior by far."""
    x_train, train, x_test, test = features
    code = {a: i for i, a in enumerate(sorted({a for answers in ANSWER_SETS.values() for a in answers}))}
    rng = np.random.default_rng(0)
    leak = lambda samples: np.array([[code[s.answer] + rng.normal(0, 0.05)] for s in samples])
    one_hot = lambda samples: np.array([[float(code[s.answer] == k) for k in range(len(code))] for s in samples])
    results = leak_check(np.hstack([x_train, one_hot(train), leak(train)]), train,
                         np.hstack([x_test, one_hot(test), leak(test)]), test, ANSWER_SETS)
    accuracy, prior, _ = pooled(results)
    assert accuracy >= prior + 0.4


def test_ridge_and_statistics_shapes():
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert global_statistics(image).shape == global_statistics(image[:, :, 0]).shape
    x = np.array([[0.0], [1.0], [0.1], [0.9]])
    assert ridge_predict(x, ["a", "b", "a", "b"], np.array([[0.05], [0.95]]), ridge=0.01) == ["a", "b"]
