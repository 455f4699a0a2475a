"""Batched multi-turn generation over the model's forward pass, with the key/value cache kept between turns.

Several conversations share one key/value cache (one row each). A turn is: one *prefill* forward over what each
row has not yet fed (the env's tool-result piece with its new image, plus the last token of the previous turn),
then one *decode* forward per generated token. Rows are padded on the right within each forward and the padding
stays in the cache as masked holes; positions are passed explicitly (counting only real tokens, and for the
Qwen families the 3-D multimodal positions of their images), so a hole changes nothing but memory. Rows whose
episode ended are removed from the cache. With ``cache_reuse=False`` every turn re-encodes each conversation from
its first token instead (what a loop around ``model.generate`` does); the benchmark compares the two.

Logits are only projected for the positions that need them (``logits_to_keep``), and the entropy and
log-probability of every sampled token are computed from the logits the sampler already has.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .conversation import Conversation, TurnOutput
from .entropy import token_stats
from .families import FamilyAdapter, PlaceholderMismatch
from .sampling import SamplingConfig, StopChecker, choose_tokens


@dataclass
class BatchState:
    """The rows (conversations) sharing one key/value cache."""

    rows: list[Conversation]
    cache: Any = None
    mask: torch.Tensor | None = None  # (rows, cached columns): 1 for real tokens, 0 for holes
    stats: dict[str, float] = field(default_factory=lambda: {"forwards": 0, "prefill_tokens": 0, "decode_steps": 0,
                                                               "generated_tokens": 0, "rebuilds": 0})


class Engine:
    """Runs prefill and decode forwards for a :class:`BatchState`."""

    def __init__(self, model: Any, adapter: FamilyAdapter, sampling: SamplingConfig, eos_ids: Sequence[int],
                 cache_reuse: bool = True) -> None:
        self.model = model
        self.adapter = adapter
        self.sampling = sampling
        self.cache_reuse = cache_reuse
        self.tokenizer = adapter.tokenizer
        self.stop = StopChecker(self.tokenizer, eos_ids, sampling.stop_strings)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else (list(eos_ids) or [0])[0])
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_2d = _supports_2d_logits_to_keep()
        self.generator: torch.Generator | None = None
        self.suppress = torch.tensor(adapter.suppressed_ids(), dtype=torch.long)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def seed(self, seed: int | None) -> None:
        """Seed the sampler (``None``: use torch's global RNG)."""
        if seed is None:
            self.generator = None
        else:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(int(seed))

    # ------------------------------------------------------------------ forward
    def _forward(self, state: BatchState, ids: torch.Tensor, chunk_mask: torch.Tensor, positions: torch.Tensor,
                 last: torch.Tensor, vision: dict[str, torch.Tensor]) -> torch.Tensor:
        """One forward over a right-padded chunk; returns the logits at ``last`` (one position per row)."""
        dev = self.device
        mask = chunk_mask if state.mask is None else torch.cat([state.mask, chunk_mask], dim=1)
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(dev),
            "attention_mask": mask.to(dev),
            "position_ids": positions.to(dev),
            self._cache_kw: state.cache,
            "use_cache": True,
        }
        if self._keep_2d:
            kwargs["logits_to_keep"] = last.view(-1, 1).to(dev)
        if vision:
            dtype = next(self.model.parameters()).dtype
            kwargs.update({k: (v.to(dev, dtype) if v.is_floating_point() else v.to(dev)) for k, v in vision.items()})
            kwargs.update({k: v.to(dev) for k, v in self.adapter.forward_extras(ids).items()})
        with torch.inference_mode():
            out = self.model(**kwargs)
        state.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        state.mask = mask
        state.stats["forwards"] += 1
        logits = out.logits
        if self._keep_2d:
            return logits[:, 0, :]
        return logits[torch.arange(logits.shape[0]), last.to(logits.device)]

    def prefill(self, state: BatchState) -> torch.Tensor:
        """Feed every row what it has not fed yet; returns next-token logits (rows x vocab).

        Re-encodes all rows from scratch when ``cache_reuse`` is off or a row's context changed (budget eviction).
        """
        for conv in state.rows:
            conv.check()
        if not self.cache_reuse or state.cache is None or any(c.needs_rebuild for c in state.rows):
            if state.cache is not None:
                state.stats["rebuilds"] += 1
            state.cache, state.mask = None, None
            for conv in state.rows:
                conv.cached_len, conv.next_pos, conv.needs_rebuild = 0, 0, False
        chunks = [conv.uncached() for conv in state.rows]
        if any(not ids for ids, _ in chunks):
            raise RuntimeError("a row has nothing to feed: its turn was not followed by a tool result")
        length = max(len(ids) for ids, _ in chunks)
        rows = len(state.rows)
        ids_t = torch.full((rows, length), self.pad_id, dtype=torch.long)
        chunk_mask = torch.zeros((rows, length), dtype=torch.long)
        positions = torch.zeros((3, rows, length) if self.adapter.mrope else (rows, length), dtype=torch.long)
        last = torch.zeros(rows, dtype=torch.long)
        vision_parts: list[dict[str, torch.Tensor]] = []
        expected: list[int] = []
        n_images = 0
        for r, (conv, (ids, vision)) in enumerate(zip(state.rows, chunks)):
            n = len(ids)
            ids_t[r, :n] = torch.tensor(ids, dtype=torch.long)
            chunk_mask[r, :n] = 1
            row_vision = self.adapter.collate(vision)
            pos, conv.next_pos = self.adapter.positions(ids, row_vision, conv.next_pos)
            positions[..., r, :n] = pos
            positions[..., r, n:] = pos[..., -1:]
            last[r] = n - 1
            conv.cached_len += n
            vision_parts += vision
            for part in conv.parts:
                if part.vision and any(v is part.vision for v in vision):
                    n_images += len(part.images)
                    expected += [conv.slots[s].prepared.tokens for s, _ in part.slots]
        batch_vision = self.adapter.collate(vision_parts)
        flat = ids_t[chunk_mask.bool()].tolist()
        self.adapter.check_placeholders(flat, n_images, batch_vision, expected)
        state.stats["prefill_tokens"] += int(chunk_mask.sum())
        return self._forward(state, ids_t, chunk_mask, positions, last, batch_vision)

    def decode_turn(self, state: BatchState, logits: torch.Tensor) -> list[TurnOutput]:
        """Generate one turn for every row, starting from ``logits`` (the prefill's next-token logits)."""
        cfg = self.sampling
        rows = len(state.rows)
        ids: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        entropies: list[list[float]] = [[] for _ in range(rows)]
        finish: list[str | None] = [None] * rows
        for conv, gen in zip(state.rows, ids):
            conv.turn_ids = gen
        active = list(range(rows))
        while True:
            sub = logits[active] if len(active) < rows else logits
            tokens = choose_tokens(sub, cfg, [state.rows[r] for r in active], self.generator, self.suppress)
            ent, lp = token_stats(sub, tokens, cfg.temperature)
            tokens_l, lp_l, ent_l = tokens.tolist(), lp.tolist(), ent.tolist()  # one device sync per step
            for j, r in enumerate(active):
                ids[r].append(int(tokens_l[j]))
                logprobs[r].append(float(lp_l[j]))
                entropies[r].append(float(ent_l[j]))
                finish[r] = self.stop.check(ids[r]) or ("length" if len(ids[r]) >= cfg.max_new_tokens else None)
            state.stats["generated_tokens"] += len(active)
            active = [r for r in active if finish[r] is None]
            if not active:
                break
            step_ids = torch.full((rows, 1), self.pad_id, dtype=torch.long)
            step_mask = torch.zeros((rows, 1), dtype=torch.long)
            positions = torch.zeros((3, rows, 1) if self.adapter.mrope else (rows, 1), dtype=torch.long)
            for r in active:
                conv = state.rows[r]
                step_ids[r, 0] = ids[r][-1]
                step_mask[r, 0] = 1
                positions[..., r, 0] = conv.next_pos
                conv.next_pos += 1
                conv.cached_len += 1
            state.stats["decode_steps"] += 1
            logits = self._forward(state, step_ids, step_mask, positions, torch.zeros(rows, dtype=torch.long), {})
        return [TurnOutput(ids[r], logprobs[r], entropies[r], finish[r] or "length") for r in range(rows)]

    def drop(self, state: BatchState, keep: Sequence[int]) -> None:
        """Keep only rows ``keep`` (in that order) in the batch and its cache."""
        keep = list(keep)
        if len(keep) == len(state.rows):
            return
        state.rows = [state.rows[r] for r in keep]
        if not keep:
            state.cache, state.mask = None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        if state.cache is not None:
            state.cache.batch_select_indices(index)
        if state.mask is not None:
            state.mask = state.mask[index.cpu()]


def _supports_2d_logits_to_keep() -> bool:
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["BatchState", "Engine", "PlaceholderMismatch"]
