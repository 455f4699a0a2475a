"""Token entropy from the logits the generation loop already has, and the tool-argument tokens EVR reads.

Per generated token t with logits z_t: p_t = softmax(z_t / T) over the full vocabulary (T the sampling temperature,
1 for greedy decoding), H_t = -sum p log p, normalised by log |V| so it lies in [0, 1] (method.md, "entropy
definition"). The log-probability of the sampled token is taken from the same distribution, before top-p/top-k,
any logits hook and the masking of image-placeholder tokens (which the sampler never picks), so it is the model's
own probability pi(a|s), the one a trainer's forward pass recomputes. Computing both
costs one log-softmax per step on logits the sampler needs anyway: no extra forward pass.

Per turn: ``entropy`` is the mean over the turn's generated tokens; ``tool_entropy`` the mean over the tokens of the
tool call's box argument (the coordinate tokens), or over all its argument tokens when the call has no box, and
``None`` when the turn makes no tool call.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.IGNORECASE | re.DOTALL)
_ARGUMENTS = re.compile(r'"(?:arguments|parameters)"\s*:\s*')


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


@dataclass(frozen=True)
class ToolSpans:
    """Character spans in a turn's text: the tool call's arguments value and its box argument (if any)."""

    arguments: tuple[int, int] | None
    box: tuple[int, int] | None


def tool_spans(text: str, box_keys: Sequence[str] = ("bbox_2d",)) -> ToolSpans:
    """Spans of the arguments of the tool call the env will execute (the last one outside ``<think>``)."""
    masked = _THINK.sub(lambda m: " " * len(m.group(0)), text)
    calls = list(_TOOL_CALL.finditer(masked))
    if not calls:
        return ToolSpans(None, None)
    call = calls[-1]
    body_start = call.start(1)
    body = text[body_start : call.end(1)]
    found = _ARGUMENTS.search(body)
    if not found:
        return ToolSpans(None, None)
    start = found.end()
    try:
        _, length = json.JSONDecoder().raw_decode(body[start:])
        end = start + length
    except ValueError:
        end = len(body.rstrip())
    arguments = (body_start + start, body_start + end)
    box = None
    for key in box_keys:
        m = re.search(r'"%s"\s*:\s*(\[[^\]]*\]?)' % re.escape(key), body[start:end])
        if m:
            box = (body_start + start + m.start(1), body_start + start + m.end(1))
            break
    return ToolSpans(arguments, box)


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
    entropy: float | None
    tool_entropy: float | None
    argument_mask: list[bool]
    box_mask: list[bool]


def turn_entropy(tokenizer: Any, ids: Sequence[int], entropies: Sequence[float], text: str,
                 box_keys: Sequence[str] = ("bbox_2d",)) -> TurnEntropy:
    """Turn-level entropy and the tool-argument masks of one generated turn."""
    entropy = float(sum(entropies) / len(entropies)) if entropies else None
    spans = tool_spans(text, box_keys)
    if spans.arguments is None:
        empty = [False] * len(ids)
        return TurnEntropy(entropy, None, empty, empty)
    offsets = token_offsets(tokenizer, ids)
    arg_mask = span_mask(offsets, spans.arguments)
    box_mask = span_mask(offsets, spans.box)
    chosen = box_mask if any(box_mask) else arg_mask
    values = [h for h, m in zip(entropies, chosen) if m]
    return TurnEntropy(entropy, float(sum(values) / len(values)) if values else None, arg_mask, box_mask)


__all__ = [
    "ToolSpans",
    "TurnEntropy",
    "normalised_entropy",
    "span_mask",
    "token_offsets",
    "token_stats",
    "tool_spans",
    "turn_entropy",
]
