"""Word ids for questions and options: a fixed vocabulary plus hashed buckets for unknown words.

Trainers that cannot read text (SB3, any MLP policy) see questions as integer ids.
The mapping must not depend on the data split or on which samples were seen, or a
policy trained on ``split="train"`` would read different ids at test time. So ids
come from a fixed vocabulary (:data:`DEFAULT_VOCABULARY`, or your own list) and every
other word is hashed (CRC-32, stable across processes and platforms) into
``oov_buckets`` extra ids:

===============================  =============================================
id                               meaning
===============================  =============================================
``0``                            padding (after the last word)
``1 .. len(vocabulary)``         ``vocabulary[id - 1]``
``len(vocabulary) + 1 ..``       an out-of-vocabulary word, by hash
===============================  =============================================

Text is lower-cased and split into runs of letters and digits ("micro-bleeds" is
``micro``, ``bleeds``); words beyond ``max_tokens`` are dropped.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

# Question words of the procedural dataset and of common medical VQA sets (VQA-RAD, SLAKE,
# PathVQA, OmniMedVQA), option letters and digits. Order fixes the ids: append, never reorder.
DEFAULT_VOCABULARY: tuple[str, ...] = (
    # function words
    "a", "an", "the", "is", "are", "there", "this", "that", "these", "in", "of", "on", "or", "and", "to",
    "with", "what", "which", "where", "how", "many", "does", "do", "can", "be", "seen", "shown", "one",
    "image", "images", "side", "part", "larger", "smaller", "bigger",
    # answers and positions
    "yes", "no", "left", "right", "upper", "lower", "top", "bottom", "middle", "center", "quadrant",
    # procedural findings
    "nodule", "nodules", "lesion", "lesions", "calcification", "calcifications", "micro", "bleed", "bleeds",
    # common medical VQA words
    "normal", "abnormal", "abnormality", "organ", "modality", "plane", "ct", "mri", "mr", "x", "ray",
    "ultrasound", "chest", "lung", "lungs", "brain", "liver", "kidney", "heart", "abdomen", "fundus",
    "mass", "tumor", "effusion", "fracture", "opacity", "enlarged",
    # option letters and digits
    "b", "c", "d", "e", "f", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
)
DEFAULT_OOV_BUCKETS = 32
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased runs of ASCII letters and digits."""
    return _WORD.findall(str(text).lower())


class Tokenizer:
    """Maps text to a fixed-length array of word ids (see the module docstring).

    Args:
        vocabulary: Known words; ids ``1..len(vocabulary)`` in this order. Must be unique.
        oov_buckets: Number of hashed ids for other words (0 drops unknown words).
        max_tokens: Length of the id array; longer texts are cut.
    """

    def __init__(
        self,
        vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
        oov_buckets: int = DEFAULT_OOV_BUCKETS,
        max_tokens: int = 16,
    ) -> None:
        vocabulary = tuple(str(w) for w in vocabulary)
        bad = [w for w in vocabulary if words(w) != [w]]
        if bad:
            raise ValueError(f"vocabulary words must be single lower-case runs of a-z / 0-9, got {bad[:5]}")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("vocabulary lists a word twice")
        if not isinstance(oov_buckets, int) or oov_buckets < 0:
            raise ValueError(f"oov_buckets must be an integer >= 0, got {oov_buckets!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        self.vocabulary = vocabulary
        self.oov_buckets = oov_buckets
        self.max_tokens = max_tokens
        self._ids = {w: i + 1 for i, w in enumerate(vocabulary)}

    @property
    def num_ids(self) -> int:
        """Number of distinct ids, padding included (the ``nvec`` entry of a ``MultiDiscrete``)."""
        return 1 + len(self.vocabulary) + self.oov_buckets

    def word_id(self, word: str) -> int:
        """The id of one (already lower-cased) word; 0 for an unknown word when there are no buckets."""
        known = self._ids.get(word)
        if known is not None:
            return known
        if self.oov_buckets == 0:
            return 0
        return 1 + len(self.vocabulary) + zlib.crc32(word.encode("utf-8")) % self.oov_buckets

    def encode(self, text: str) -> np.ndarray:
        """``max_tokens`` int64 ids, zero-padded on the right."""
        out = np.zeros(self.max_tokens, dtype=np.int64)
        ids = [i for i in (self.word_id(w) for w in words(text)) if i][: self.max_tokens]
        out[: len(ids)] = ids
        return out

    def config(self) -> dict:
        """Constructor arguments (JSON-friendly), to rebuild the same tokenizer elsewhere."""
        return {"vocabulary": list(self.vocabulary), "oov_buckets": self.oov_buckets, "max_tokens": self.max_tokens}


__all__ = ["DEFAULT_OOV_BUCKETS", "DEFAULT_VOCABULARY", "Tokenizer", "words"]
