"""Constrain decoding to the zoom protocol while the model samples the box coordinates (EVR tests and benchmarks).

:class:`ForceText` fixes every token, so all trajectories are identical and EVR has nothing to branch on. A random
-weight model left free writes no valid tool call at all. :class:`ZoomGrammar` sits between the two: a logits hook
that forces the structure of each turn (think text, the tool-call JSON, the answer) and lets the model's own
distribution choose the four box numbers, among digit tokens that spell a valid box (``x2 > x1``, ``y2 > y1``,
inside ``coordinate_range``). Entropies and log-probabilities are still computed from the unconstrained logits
(hooks run after them), so the coordinate entropy EVR reads is the model's own.

Turn ``t < zooms`` is::

    <think>{think}</think><tool_call>{"name": "zoom", "arguments": {"bbox_2d": [A, B, C, D]}}</tool_call><end>

and the turn after the last zoom is ``<think>{think}</think><answer>{answer}</answer><end>``. Every row follows
the same grammar, whatever its key, so EVR branches (new keys) are constrained too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import torch


class ZoomGrammar:
    """A logits hook writing ``zooms`` zoom calls with sampled coordinates, then an answer.

    Args:
        tokenizer: The policy's tokenizer.
        zooms: Zoom turns per episode before the answer turn.
        think: Reasoning text written before each action (longer text: a later fork point, more shared prefix).
        answer: The final answer text.
        coordinate_range: Inclusive range of each coordinate (in the env's box format, integers).
        min_side: A box's width and height are at least this.
        end_id: Token written after each turn (default: the tokenizer's EOS).
    """

    def __init__(self, tokenizer: Any, zooms: int = 1, think: str = "Look closer at the region.",
                 answer: str = "yes", coordinate_range: tuple[int, int] = (0, 80), min_side: int = 4,
                 end_id: int | None = None) -> None:
        lo, hi = coordinate_range
        if not 0 <= lo < hi or hi - lo < min_side:
            raise ValueError(f"coordinate_range {coordinate_range} must leave room for boxes of side {min_side}")
        self.tokenizer, self.zooms, self.lo, self.hi, self.min_side = tokenizer, zooms, lo, hi, min_side
        end = tokenizer.eos_token_id if end_id is None else end_id
        enc = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
        head = f"<think>{think}</think>"
        call = enc(head + '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [')
        sep = enc(", ")
        tail = enc("]}}</tool_call>")
        # a template is a list of items: a token id, or ("num", i) for the i-th coordinate
        self.zoom_template: list[Any] = [*call]
        for i in range(4):
            self.zoom_template += [("num", i)] + (sep if i < 3 else tail)
        self.zoom_template.append(end)
        self.answer_template: list[Any] = [*enc(f"{head}<answer>{answer}</answer>"), end]
        pieces = {i: tokenizer.decode([i]) for i in tokenizer.get_vocab().values()}
        self.digit_tokens = {i: p for i, p in pieces.items() if p.isdigit()}

    @lru_cache(maxsize=None)  # noqa: B019 (one grammar per policy; the cache lives as long as it)
    def _valid(self, lower: int, upper: int) -> tuple[frozenset[str], frozenset[str]]:
        """(numbers allowed, their prefixes) for a coordinate in ``[lower, upper]``."""
        values = [str(v) for v in range(max(lower, self.lo), upper + 1)]
        return frozenset(values), frozenset(v[:k] for v in values for k in range(1, len(v) + 1))

    def _bounds(self, index: int, numbers: Sequence[int]) -> tuple[int, int]:
        """x1, y1 leave room for the side; x2 > x1 and y2 > y1 by at least ``min_side``."""
        return (numbers[index - 2] + self.min_side, self.hi) if index >= 2 else (self.lo, self.hi - self.min_side)

    def allowed(self, turn: int, ids: Sequence[int]) -> list[int] | None:
        """Token ids allowed next after ``ids`` in turn ``turn`` (``None``: the turn is over or off-grammar)."""
        template = self.zoom_template if turn < self.zooms else self.answer_template if turn == self.zooms else None
        if template is None:
            return None
        pos, numbers, k = 0, [], 0
        while True:
            if pos >= len(template):
                return None
            item = template[pos]
            if not isinstance(item, tuple):
                if k == len(ids):
                    return [item]
                if ids[k] != item:
                    return None
                pos, k = pos + 1, k + 1
                continue
            # a number: digit tokens while they keep the prefix valid, then the next literal
            valid, prefixes = self._valid(*self._bounds(item[1], numbers))
            text = ""
            while k < len(ids) and ids[k] in self.digit_tokens and text + self.digit_tokens[ids[k]] in prefixes:
                text += self.digit_tokens[ids[k]]
                k += 1
            if k == len(ids):
                options = [i for i, s in self.digit_tokens.items() if text + s in prefixes]
                if text in valid:
                    options.append(template[pos + 1])
                return options
            if text not in valid:
                return None
            numbers.append(int(text))
            pos += 1

    def __call__(self, rows: Sequence[Any], logits: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(rows):
            options = self.allowed(row.turn, row.turn_ids)
            if options:
                keep = torch.full_like(logits[i], float("-inf"))
                index = torch.tensor(options, dtype=torch.long, device=logits.device)
                keep[index] = logits[i, index]
                logits[i] = keep
        return logits


__all__ = ["ZoomGrammar"]
