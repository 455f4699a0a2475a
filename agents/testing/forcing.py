"""Force a model's output to given text, through its real forward pass (for tests of tool-call handling).

Random-weight models almost never write a valid tool call, so tests constrain decoding: :class:`ForceText` is a
logits hook (see :class:`agents.vlm.SamplingConfig`) that masks every token but the next one of a target string.
The model still runs its forward pass on every token; entropies and log-probabilities are still computed from its
own, unconstrained logits (the hook runs after them), so what the tests check is the real pipeline.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch


class ForceText:
    """Make conversation ``key`` write ``scripts[key][turn]`` at each turn (then its end-of-turn token).

    Args:
        tokenizer: The policy's tokenizer.
        scripts: ``{key: [text of turn 0, text of turn 1, ...]}`` (a list is read as ``{0: ..., 1: ...}``).
            Turns past the end of a script, and keys without one, are sampled freely.
        end_id: Token written after each text (default: the tokenizer's EOS).
    """

    def __init__(self, tokenizer: Any, scripts: Mapping[Any, Sequence[str]] | Sequence[Sequence[str]],
                 end_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.scripts = dict(scripts) if isinstance(scripts, Mapping) else dict(enumerate(scripts))
        self.end_id = tokenizer.eos_token_id if end_id is None else end_id
        self._cache: dict[str, list[int]] = {}

    def target(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tokenizer(text, add_special_tokens=False).input_ids + [self.end_id]
        return self._cache[text]

    def __call__(self, rows: Sequence[Any], logits: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(rows):
            script = self.scripts.get(row.key)
            if script is None or row.turn >= len(script):
                continue
            target = self.target(script[row.turn])
            k = len(row.turn_ids)
            if k < len(target):
                forced = torch.full_like(logits[i], float("-inf"))
                forced[target[k]] = 0.0
                logits[i] = forced
        return logits


__all__ = ["ForceText"]
