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
from typing import Any, Callable, Sequence

import torch

from .conversation import Conversation, TurnOutput
from .entropy import token_stats
from .families import FamilyAdapter, PlaceholderMismatch
from .sampling import SamplingConfig, StopChecker, choose_tokens


@dataclass
class RowCursor:
    """The engine's generation state for one conversation (one cache row): the only writer of this state.

    Logits hooks get cursors as their read-only row view: ``key``, ``turn`` and ``turn_ids`` (the tokens generated
    so far this turn), as transformers' ``LogitsProcessor`` gets ``input_ids``.
    """

    conv: Conversation
    cached_len: int = 0  # tokens of the conversation already in the cache
    next_pos: int = 0  # position of the next token fed
    version: int = -1  # the conversation's version when its tokens were cached (a change forces a rebuild)
    turn_cached0: int = 0  # cached_len when this turn's decoding began
    turn_pos0: int = 0  # position of this turn's first generated token
    turn_ids: list[int] = field(default_factory=list)
    turn_logprobs: list[float] = field(default_factory=list)
    turn_entropies: list[float] = field(default_factory=list)
    turn_cols: list[int] = field(default_factory=list)  # cache column each generated token was fed at
    finish: str | None = None  # why this turn ended ("eos" | "stop" | "length" | set by a fork observer)
    ready: bool = False  # the row holds next-token logits to sample from (else its last token awaits feeding)

    @property
    def key(self) -> Any:
        return self.conv.key

    @property
    def turn(self) -> int:
        return self.conv.turn

    def begin_turn(self) -> None:
        self.turn_cached0, self.turn_pos0 = self.cached_len, self.next_pos
        self.turn_ids, self.turn_logprobs, self.turn_entropies, self.turn_cols = [], [], [], []
        self.finish, self.ready = None, True

    def output(self) -> TurnOutput:
        return TurnOutput(list(self.turn_ids), list(self.turn_logprobs), list(self.turn_entropies),
                          self.finish or "length")


@dataclass
class BatchState:
    """The rows sharing one key/value cache: one :class:`RowCursor` per conversation."""

    rows: list[RowCursor]
    cache: Any = None
    mask: torch.Tensor | None = None  # (rows, cached columns): 1 for real tokens, 0 for holes
    stats: dict[str, float] = field(default_factory=lambda: {"forwards": 0, "prefill_tokens": 0, "decode_steps": 0,
                                                               "generated_tokens": 0, "rebuilds": 0,
                                                               "forked_rows": 0})

    @classmethod
    def start(cls, convs: Sequence[Conversation]) -> BatchState:
        return cls([RowCursor(c) for c in convs])

    @property
    def convs(self) -> list[Conversation]:
        return [row.conv for row in self.rows]


# A fork observer is called after every sampling step of a turn with the rows whose turn has just ended; it may add
# rows with Engine.fork_rows or end rows early by setting their ``finish``.
ForkObserver = Callable[["Engine", BatchState, list[int]], None]


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
        for row in state.rows:
            row.conv.check()
        if (not self.cache_reuse or state.cache is None
                or any(row.version not in (-1, row.conv.version) for row in state.rows)):
            if state.cache is not None:
                state.stats["rebuilds"] += 1
            state.cache, state.mask = None, None
            for row in state.rows:
                row.cached_len, row.next_pos = 0, 0
        chunks = [row.conv.uncached(row.cached_len) for row in state.rows]
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
        for r, (row, (ids, vision)) in enumerate(zip(state.rows, chunks)):
            conv, n = row.conv, len(ids)
            ids_t[r, :n] = torch.tensor(ids, dtype=torch.long)
            chunk_mask[r, :n] = 1
            row_vision = self.adapter.collate(vision)
            pos, row.next_pos = self.adapter.positions(ids, row_vision, row.next_pos)
            positions[..., r, :n] = pos
            positions[..., r, n:] = pos[..., -1:]
            last[r] = n - 1
            row.cached_len += n
            row.version = conv.version
            vision_parts += vision
            for part in conv.parts:
                if part.vision and any(v is part.vision for v in vision):
                    n_images += len(part.images)
                    expected += [conv.slots[s].prepared.tokens for s, _ in part.slots]
        batch_vision = self.adapter.collate(vision_parts)
        flat = ids_t[chunk_mask.bool()].tolist()
        self.adapter.check_placeholders(flat, n_images, batch_vision, expected)
        state.stats["prefill_tokens"] += int(chunk_mask.sum())
        for row in state.rows:
            row.begin_turn()
        return self._forward(state, ids_t, chunk_mask, positions, last, batch_vision)

    def decode_turn(self, state: BatchState, logits: torch.Tensor,
                    observer: ForkObserver | None = None) -> list[TurnOutput]:
        """Generate one turn for every row, starting from ``logits`` (the prefill's next-token logits).

        ``observer`` (EVR) sees each row as its turn ends and may fork rows; the returned outputs cover every row
        of ``state`` when the turn is over, forked rows included, in row order.
        """
        cfg = self.sampling
        pending = logits
        while True:
            sample = [r for r, row in enumerate(state.rows) if row.ready and row.finish is None]
            ended: list[int] = []
            if sample:
                sub = pending[sample] if len(sample) < pending.shape[0] else pending
                tokens = choose_tokens(sub, cfg, [state.rows[r] for r in sample], self.generator, self.suppress)
                ent, lp = token_stats(sub, tokens, cfg.temperature)
                tokens_l, lp_l, ent_l = tokens.tolist(), lp.tolist(), ent.tolist()  # one device sync per step
                for j, r in enumerate(sample):
                    row = state.rows[r]
                    row.turn_ids.append(int(tokens_l[j]))
                    row.turn_logprobs.append(float(lp_l[j]))
                    row.turn_entropies.append(float(ent_l[j]))
                    row.ready = False
                    row.finish = self.stop.check(row.turn_ids) or (
                        "length" if len(row.turn_ids) >= cfg.max_new_tokens else None)
                    if row.finish is not None:
                        ended.append(r)
                state.stats["generated_tokens"] += len(sample)
            if observer is not None and ended:
                observer(self, state, ended)
            feed = [r for r, row in enumerate(state.rows) if row.finish is None and not row.ready]
            if not feed:
                break
            rows = len(state.rows)
            step_ids = torch.full((rows, 1), self.pad_id, dtype=torch.long)
            step_mask = torch.zeros((rows, 1), dtype=torch.long)
            positions = torch.zeros((3, rows, 1) if self.adapter.mrope else (rows, 1), dtype=torch.long)
            column = 0 if state.mask is None else state.mask.shape[1]
            for r in feed:
                row = state.rows[r]
                step_ids[r, 0] = row.turn_ids[-1]
                step_mask[r, 0] = 1
                positions[..., r, 0] = row.next_pos
                row.turn_cols.append(column)
                row.next_pos += 1
                row.cached_len += 1
                row.ready = True
            state.stats["decode_steps"] += 1
            pending = self._forward(state, step_ids, step_mask, positions, torch.zeros(rows, dtype=torch.long), {})
        return [row.output() for row in state.rows]

    def fork_rows(self, state: BatchState, forks: Sequence[tuple[int, int, Conversation]]) -> list[int]:
        """Add one row per ``(parent row, keep, conversation)``: a copy of the parent's cache row that keeps the
        parent's first ``keep`` tokens of this turn (``keep >= 1``) and resamples from there.

        Nothing is recomputed but the last kept token, which is fed again so the child gets its own next-token
        logits: the parent's later columns become masked holes in the child's row. Returns the new row indices.
        """
        if not forks:
            return []
        if state.cache is None or state.mask is None:
            raise RuntimeError("fork_rows needs a filled cache (fork during decode_turn)")
        new_rows = []
        mask_rows = []
        for parent_index, keep, conv in forks:
            parent = state.rows[parent_index]
            if not 1 <= keep < len(parent.turn_ids) or keep > len(parent.turn_cols):
                raise ValueError(f"keep={keep} must be in [1, {min(len(parent.turn_ids) - 1, len(parent.turn_cols))}]")
            child = RowCursor(conv, cached_len=parent.turn_cached0 + keep - 1, next_pos=parent.turn_pos0 + keep - 1,
                              version=parent.version, turn_cached0=parent.turn_cached0, turn_pos0=parent.turn_pos0,
                              turn_ids=parent.turn_ids[:keep], turn_logprobs=parent.turn_logprobs[:keep],
                              turn_entropies=parent.turn_entropies[:keep], turn_cols=parent.turn_cols[:keep - 1])
            row_mask = state.mask[parent_index].clone()
            row_mask[parent.turn_cols[keep - 1]:] = 0  # the last kept token is fed again at a new column
            new_rows.append(child)
            mask_rows.append(row_mask)
        index = list(range(len(state.rows))) + [p for p, _, _ in forks]
        state.cache.batch_select_indices(torch.tensor(index, dtype=torch.long, device=self.device))
        state.mask = torch.cat([state.mask, torch.stack(mask_rows)], dim=0)
        first = len(state.rows)
        state.rows.extend(new_rows)
        state.stats["forked_rows"] += len(new_rows)
        return list(range(first, len(state.rows)))

    def add_rows(self, state: BatchState, convs: Sequence[Conversation]) -> None:
        """Start new conversations in a running batch (their cache rows begin as holes; the next prefill fills them)."""
        rows = [RowCursor(c) for c in convs]
        if state.cache is not None and state.mask is not None and rows:
            index = list(range(len(state.rows))) + [0] * len(rows)  # any row: every column is masked out
            state.cache.batch_select_indices(torch.tensor(index, dtype=torch.long, device=self.device))
            state.mask = torch.cat([state.mask, state.mask.new_zeros((len(rows), state.mask.shape[1]))], dim=0)
        state.rows.extend(rows)

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


__all__ = ["BatchState", "Engine", "ForkObserver", "PlaceholderMismatch", "RowCursor"]
