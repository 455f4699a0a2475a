"""SB3Observation: a flat ``Dict`` of arrays that SB3's ``MultiInputPolicy`` accepts (no ``Text``)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

from ..grading import normalize_answer
from .tokens import DEFAULT_OOV_BUCKETS, DEFAULT_VOCABULARY, Tokenizer

ENCODINGS = ("ids", "none")
KEPT_KEYS = ("image", "entropy", "entropy_mask", "view_box", "step")


class SB3Observation(gym.ObservationWrapper, RecordConstructorArgs):
    """Replace the text keys of a MedVR observation with word ids, or drop them.

    ## Observation Space

    A flat ``Dict`` (SB3's ``CombinedExtractor`` builds a CNN for ``image`` and one-hot
    encodes the ``MultiDiscrete`` keys):

    - ``image``, ``entropy``, ``entropy_mask``, ``view_box``, ``step``: as in the env;
    - ``question``: ``MultiDiscrete([V] * max_question_tokens)`` word ids (see
      :mod:`medvr_env.wrappers.tokens`; ``V`` = 130 with the default vocabulary), when
      ``question_encoding="ids"``;
    - ``options``: ``MultiDiscrete([V] * max_option_tokens)`` ids of the options text
      ("A. upper left B. lower right ..."), when ``question_encoding="ids"`` and
      ``max_option_tokens > 0``;
    - ``view_entropy``: ``Box(0, 1, (2,))`` = ``[value, known]``: the env's uncertainty
      estimator on the view the policy sees *now* (``[0, 0]`` when it gives none),
      when ``view_entropy=True``. The ``entropy`` window records the value each step
      was taken under, so it lags one view behind; this key does not.
    - ``reader_answer``: ``Box(0, 1, (A,))``, the estimator's answer distribution over the
      ``A`` answer texts of the SB3 action wrappers
      (:func:`~medvr_env.wrappers.sb3_actions.answer_vocabulary`), when ``reader_answer=True``
      and the estimator has a ``distribution(episode) -> {answer: p}`` method (zeros otherwise).
      A policy can then learn where to look and when to trust what the reader read there,
      instead of learning to read findings from the reward alone.

    ``feedback`` (free text) is dropped; errors still show in ``info["error"]``.

    ## Arguments

    ``question_encoding`` (``"ids"`` | ``"none"``), ``max_question_tokens`` (16),
    ``max_option_tokens`` (16), ``vocabulary`` (default
    :data:`~medvr_env.wrappers.tokens.DEFAULT_VOCABULARY`), ``oov_buckets`` (32),
    ``view_entropy`` (True), ``reader_answer`` (False).
    """

    def __init__(
        self,
        env: gym.Env,
        question_encoding: str = "ids",
        max_question_tokens: int = 16,
        max_option_tokens: int = 16,
        vocabulary: Sequence[str] | None = None,
        oov_buckets: int = DEFAULT_OOV_BUCKETS,
        view_entropy: bool = True,
        reader_answer: bool = False,
    ) -> None:
        RecordConstructorArgs.__init__(
            self, question_encoding=question_encoding, max_question_tokens=max_question_tokens,
            max_option_tokens=max_option_tokens, vocabulary=list(vocabulary) if vocabulary is not None else None,
            oov_buckets=oov_buckets, view_entropy=view_entropy, reader_answer=reader_answer,
        )
        gym.ObservationWrapper.__init__(self, env)
        if question_encoding not in ENCODINGS:
            raise ValueError(f"question_encoding must be one of {ENCODINGS}, got {question_encoding!r}")
        if isinstance(max_option_tokens, bool) or not isinstance(max_option_tokens, int) or max_option_tokens < 0:
            raise ValueError(f"max_option_tokens must be an integer >= 0, got {max_option_tokens!r}")
        inner = env.observation_space
        if not isinstance(inner, spaces.Dict) or any(k not in inner.spaces for k in KEPT_KEYS):
            raise TypeError(f"SB3Observation needs a MedVR observation Dict with keys {KEPT_KEYS}, got {inner}")
        self.question_encoding = question_encoding
        self.view_entropy = bool(view_entropy)
        vocab = DEFAULT_VOCABULARY if vocabulary is None else vocabulary
        self.question_tokenizer = Tokenizer(vocab, oov_buckets, max_question_tokens)
        self.option_tokenizer = Tokenizer(vocab, oov_buckets, max_option_tokens) if max_option_tokens else None
        out: dict[str, spaces.Space] = {k: inner[k] for k in KEPT_KEYS}
        if question_encoding == "ids":
            out["question"] = spaces.MultiDiscrete([self.question_tokenizer.num_ids] * max_question_tokens)
            if self.option_tokenizer is not None:
                out["options"] = spaces.MultiDiscrete([self.option_tokenizer.num_ids] * max_option_tokens)
        if self.view_entropy:
            out["view_entropy"] = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.answers: tuple[str, ...] = ()
        if reader_answer:
            from .sb3_actions import answer_vocabulary

            self.answers = answer_vocabulary(env.unwrapped.dataset)
            out["reader_answer"] = spaces.Box(0.0, 1.0, (len(self.answers),), np.float32)
        self.observation_space = spaces.Dict(out)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        out = {k: observation[k] for k in KEPT_KEYS}
        if self.question_encoding == "ids":
            out["question"] = self.question_tokenizer.encode(observation["question"])
            if self.option_tokenizer is not None:
                out["options"] = self.option_tokenizer.encode(observation["options"])
        if self.view_entropy:
            out["view_entropy"] = self._view_entropy()
        if self.answers:
            out["reader_answer"] = self._reader_answer()
        return out

    def _reader_answer(self) -> np.ndarray:
        base = self.env.unwrapped
        probs = np.zeros(len(self.answers), dtype=np.float32)
        read = getattr(base.estimator, "distribution", None)
        if read is None:
            return probs
        dist = {normalize_answer(str(k)): float(v) for k, v in read(base.episode).items()}
        for i, answer in enumerate(self.answers):
            value = dist.get(normalize_answer(answer), 0.0)
            probs[i] = min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
        return probs

    def _view_entropy(self) -> np.ndarray:
        base = self.env.unwrapped
        value = base.estimator.estimate(base.episode)
        try:
            value = float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            return np.zeros(2, dtype=np.float32)
        return np.array([min(max(value, 0.0), 1.0), 1.0], dtype=np.float32)


__all__ = ["ENCODINGS", "SB3Observation"]
