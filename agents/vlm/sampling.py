"""Sampling controls and the per-step token choice of the generation loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

# A logits hook sees the rows being generated (the engine's read-only row views, :class:`agents.vlm.engine.RowCursor`,
# with ``key``, ``turn`` and ``turn_ids``) and their logits
# (rows x vocab, after temperature) and returns logits to sample from. Entropy and log-probabilities are computed
# before hooks run, from the model's own distribution.
LogitsHook = Callable[[Sequence[Any], torch.Tensor], torch.Tensor]


@dataclass
class SamplingConfig:
    """How the policy samples.

    Attributes:
        temperature: 0 for greedy decoding (entropies are then taken at temperature 1).
        top_p: Nucleus sampling mass (1 keeps every token).
        top_k: Keep the k most likely tokens (0 keeps every token).
        max_new_tokens: Per turn; a turn that reaches it is sent to the env as it is.
        max_turns: Per episode; an episode still running after this many turns is stopped (``stop_reason
            "max_turns"``). ``None``: only the env's ``max_steps`` bounds it.
        stop_strings: A turn also ends when its text contains one of these (an action is complete).
        seed: Seeds the sampler (per rollout call) for reproducible sampling; ``None`` draws from torch's RNG.
        logits_hooks: Applied in order before sampling (constrained decoding, forced outputs in tests).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    max_turns: int | None = None
    stop_strings: tuple[str, ...] = ("</tool_call>", "</answer>")
    seed: int | None = None
    logits_hooks: list[LogitsHook] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError("top_k must be >= 0 and max_new_tokens >= 1")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 or None, got {self.max_turns}")
        self.stop_strings = tuple(self.stop_strings)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def choose_tokens(
    logits: torch.Tensor,
    config: SamplingConfig,
    rows: Sequence[Any],
    generator: torch.Generator | None,
    suppress: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token per row of ``logits`` (rows x vocab, raw); ``suppress`` ids are never picked."""
    scaled = logits.float() / (config.temperature if config.temperature > 0 else 1.0)
    for hook in config.logits_hooks:
        scaled = hook(rows, scaled)
    if suppress is not None and len(suppress):
        scaled[:, suppress.to(scaled.device)] = float("-inf")
    if config.greedy:
        return scaled.argmax(-1)
    if config.top_k:
        kth = torch.topk(scaled, min(config.top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if config.top_p < 1:
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > config.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class StopChecker:
    """Detects the end of a turn: an end-of-turn token or a stop string in the newly decoded text."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int], stop_strings: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._window = max([len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stop_strings] or [0]) + 2

    def check(self, ids: Sequence[int]) -> str | None:
        """``"eos"``, ``"stop"`` or ``None`` after the last token of ``ids`` was generated."""
        if ids and ids[-1] in self.eos_ids:
            return "eos"
        if self.stop_strings:
            tail = self.tokenizer.decode(list(ids[-self._window :]), skip_special_tokens=False)
            if any(s in tail for s in self.stop_strings):
                return "stop"
        return None


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a turn: the generation config's and tokenizer's EOS plus known end-of-turn tokens."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.append(value)
        elif isinstance(value, (list, tuple)):
            ids.extend(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<end_of_utterance>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        if token in vocab:
            ids.append(vocab[token])
    return sorted(set(ids))


__all__ = ["LogitsHook", "SamplingConfig", "StopChecker", "choose_tokens", "end_of_turn_ids"]
