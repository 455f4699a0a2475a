"""Token entropy from the logits the generation loop already has, and the tool-argument tokens EVR reads.

Per generated token t with logits z_t: p_t = softmax(z_t / T) over the full vocabulary (T the sampling temperature,
1 for greedy decoding), H_t = -sum p log p, normalised by log |V| so it lies in [0, 1] (method.md, "entropy
definition"). The log-probability of the sampled token is taken from the same distribution, before top-p/top-k,
any logits hook and the masking of image-placeholder tokens (which the sampler never picks), so it is the model's
own probability pi(a|s), the one a trainer's forward pass recomputes. Computing both
costs one log-softmax per step on logits the sampler needs anyway: no extra forward pass.

Per turn: ``entropy`` is the mean over the turn's generated tokens; ``tool_entropy`` the mean over the tokens of the
tool call's box argument (the coordinate tokens), or over all its argument tokens when the call has no box, and
``None`` when the turn makes no tool call. Where the call, its arguments and its box are comes from the protocol
parser (:mod:`medvr_env.action_spans`): one grammar for the env and the policy; here characters only become tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from medvr_env.action_spans import ActionSpans


def token_stats(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised entropy, log-probability of ``tokens``) per row of ``logits`` (rows x vocab) at ``temperature``."""
    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(scaled, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])
    chosen = logp.gather(-1, tokens.view(-1, 1).to(logp.device)).squeeze(-1)
    return entropy.clamp_(0.0, 1.0), chosen


def normalised_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Normalised entropy of each row of ``logits`` (any leading shape)."""
    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(scaled, dim=-1)
    return (-(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])).clamp_(0.0, 1.0)


def token_offsets(tokenizer: Any, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character span of each token in ``tokenizer.decode(ids, skip_special_tokens=True)``."""
    ids = list(ids)
    full = tokenizer.decode(ids, skip_special_tokens=True)
    singles = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    if "".join(singles) == full:
        spans, pos = [], 0
        for piece in singles:
            spans.append((pos, pos + len(piece)))
            pos += len(piece)
        return spans
    # Tokens that are parts of one character (byte-level BPE): measure growing prefixes instead.
    spans, prev = [], 0
    for k in range(1, len(ids) + 1):
        cur = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        spans.append((prev, max(prev, cur)))
        prev = max(prev, cur)
    return spans


def span_mask(offsets: Sequence[tuple[int, int]], span: tuple[int, int] | None) -> list[bool]:
    """Which tokens overlap the character ``span``."""
    if span is None:
        return [False] * len(offsets)
    a, b = span
    return [s < b and e > a for s, e in offsets]


@dataclass(frozen=True)
class TurnEntropy:
    """A turn's entropy channel and where its tool-call tokens are.

    Attributes:
        entropy: Mean over the turn's tokens (``None`` for an empty turn).
        tool_entropy: Mean over the box tokens (all argument tokens when the call has no box); ``None`` without a
            parsed tool call.
        argument_mask: Tokens overlapping the call's arguments.
        box_mask: Tokens overlapping the box argument's value (``[x1, y1, x2, y2]``).
        coordinate_mask: Tokens overlapping the box's numbers, from the first to the last (EVR's window).
        first_coordinate: Index of the first token of the box's first number (EVR's fork point), or ``None``.
    """

    entropy: float | None
    tool_entropy: float | None
    argument_mask: list[bool]
    box_mask: list[bool]
    coordinate_mask: list[bool] = field(default_factory=list)
    first_coordinate: int | None = None


def turn_entropy(tokenizer: Any, ids: Sequence[int], entropies: Sequence[float],
                 spans: ActionSpans | None) -> TurnEntropy:
    """Turn-level entropy and the tool-argument masks of one generated turn.

    ``spans`` is what the protocol parser located in the turn's decoded text
    (``parse_action_text(text, ..., with_spans=True).spans``); this function only maps characters to tokens.
    """
    entropy = float(sum(entropies) / len(entropies)) if entropies else None
    if spans is None or spans.arguments is None:
        empty = [False] * len(ids)
        return TurnEntropy(entropy, None, empty, empty, empty)
    offsets = token_offsets(tokenizer, ids)
    arg_mask = span_mask(offsets, spans.arguments)
    box = spans.argument("box")
    box_mask = span_mask(offsets, box.value if box is not None else None)
    items = spans.box_items
    coordinate_mask = span_mask(offsets, (items[0][0], items[-1][1]) if items else None)
    first = next((i for i, m in enumerate(coordinate_mask) if m), None)
    chosen = box_mask if any(box_mask) else arg_mask
    values = [h for h, m in zip(entropies, chosen) if m]
    return TurnEntropy(entropy, float(sum(values) / len(values)) if values else None, arg_mask, box_mask,
                       coordinate_mask, first)


__all__ = [
    "TurnEntropy",
    "normalised_entropy",
    "span_mask",
    "token_offsets",
    "token_stats",
    "turn_entropy",
]
