"""One episode's conversation: messages, images in context, the exact token sequence, and the trainer record.

The token sequence is a list of :class:`Part` s, alternately env-side (rendered by the chat template, processed with
their images) and generated (the model's own ids, never re-tokenised). The conversation is a record: parts are only
appended, except when the image budget changes an image already shown, which bumps ``version``. The generation
engine (:mod:`agents.vlm.engine`) owns the cursor (how much of the record is in its key/value cache) and re-encodes a
row whose ``version`` changed. :meth:`Conversation.fork` copies the record for an EVR branch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medvr_env import MedVRVQAEnv
from medvr_env.protocol import parse_action_text

from .budget import ImageBudget, LiveImage
from .entropy import turn_entropy
from .families import FamilyAdapter, PlaceholderMismatch, PreparedImage
from .prompts import ChatRenderer, PromptStyle, assistant_message, image_item, question_text, system_prompt, text_item
from .trajectory import Rollout, Segment, TurnRecord


@dataclass
class ImageSlot:
    """An image shown to the model: which env view, as what, and whether the budget evicted it."""

    slot: int
    view: int
    prepared: PreparedImage
    turn: int
    evicted: bool = False
    downscaled: int = 0


@dataclass
class Part:
    """A stretch of the token sequence."""

    kind: str  # "env" or "gen"
    ids: list[int]
    text: str = ""
    slots: tuple[tuple[int, tuple[int, int]], ...] = ()  # env: (slot, shown size) of its images, in order
    images: list[Any] = field(default_factory=list)
    views: list[int] = field(default_factory=list)
    vision: dict[str, Any] = field(default_factory=dict)
    turn: int = -1
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    segment: int = 0


@dataclass
class TurnOutput:
    """What the engine generated for one conversation in one turn."""

    ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    finish: str


class Conversation:
    """The policy's side of one episode in one env."""

    def __init__(
        self,
        env: Any,
        obs: dict[str, Any],
        info: dict[str, Any],
        *,
        adapter: FamilyAdapter,
        renderer: ChatRenderer,
        budget: ImageBudget,
        style: PromptStyle,
        eos_ids: Sequence[int],
        max_turns: int | None = None,
        key: Any = None,
    ) -> None:
        base = env.unwrapped
        if not isinstance(base, MedVRVQAEnv):
            raise TypeError(f"the VLM policy acts in MedVR envs, got {type(base).__name__}")
        self.env, self.base, self.key = env, base, key
        style = adapter.prompt_style(style)
        self.adapter, self.renderer, self.budget, self.style = adapter, renderer, budget, style
        self.tokenizer = adapter.tokenizer
        self.eos_ids = frozenset(eos_ids)
        self.max_turns = max_turns
        self.slots: list[ImageSlot] = []
        self.parts: list[Part] = []
        self.turns: list[TurnRecord] = []
        self.closed_segments: list[Segment] = []
        self.segment = 0
        self.rebuilds = self.evictions = self.downscales = 0
        self.finished, self.stop_reason = False, ""
        self.version = 0  # bumped when a part already in the record changes (the engine then re-encodes)

        bos = getattr(self.tokenizer, "bos_token_id", None)
        self._bos = [bos] if bos is not None and self.tokenizer("a").input_ids[:1] == [bos] else []
        slot = self._admit(0, turn=0)
        self._known_views = len(base.episode.views)
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": [text_item(system_prompt(base.tools, base.bbox_format, style))]},
            {"role": "user", "content": [
                image_item(slot.slot),
                text_item(self._label(slot) + "\n" + question_text(obs["question"], obs["options"])),
            ]},
        ]
        self._sync()

    # ------------------------------------------------------------------ state
    @property
    def turn(self) -> int:
        """Index of the turn being (or about to be) generated."""
        return len(self.turns)

    @property
    def ids(self) -> list[int]:
        return [t for p in self.parts for t in p.ids]

    def live_slots(self) -> list[ImageSlot]:
        return [s for s in self.slots if not s.evicted]

    def shown_sizes(self) -> dict[int, tuple[int, int]]:
        """Every view shown so far -> the size the model saw it at last (the frame of its "pixel" boxes)."""
        return {s.view: s.prepared.shown_size for s in self.slots}

    def uncached(self, cached_len: int) -> tuple[list[int], list[dict[str, Any]]]:
        """Token ids after the first ``cached_len`` (what a cache holding those lacks) and the vision inputs of the
        images among them."""
        ids, vision, pos = [], [], 0
        for p in self.parts:
            end = pos + len(p.ids)
            if end > cached_len:
                ids.extend(p.ids[max(0, cached_len - pos):])
                if p.vision:
                    if pos < cached_len:
                        raise RuntimeError("images are split across the cache boundary")
                    vision.append(p.vision)
            pos = end
        return ids, vision

    # ------------------------------------------------------------------ turns
    def add_turn(self, out: TurnOutput) -> dict[str, Any]:
        """Record a generated turn; returns the env action (text plus the entropy channel)."""
        text = self.tokenizer.decode(out.ids, skip_special_tokens=True)
        te = turn_entropy(self.tokenizer, out.ids, out.entropies, self.parse(text).spans)
        live = self.live_slots()
        record = TurnRecord(
            turn=self.turn, text=text, token_ids=list(out.ids), logprobs=list(out.logprobs),
            entropies=list(out.entropies), argument_mask=te.argument_mask, box_mask=te.box_mask,
            entropy=te.entropy, tool_entropy=te.tool_entropy, finish=out.finish,
            context_tokens=sum(len(p.ids) for p in self.parts), views_in_context=[s.view for s in live],
            shown_sizes=self.shown_sizes(), segment=self.segment, coordinate_mask=te.coordinate_mask,
            first_coordinate=te.first_coordinate,
        )
        self.parts.append(Part("gen", list(out.ids), turn=record.turn, logprobs=list(out.logprobs),
                               entropies=list(out.entropies), segment=self.segment))
        self.turns.append(record)
        return {
            "text": text,
            "entropy": te.entropy,
            "tool_entropy": te.tool_entropy,
            "token_entropies": list(out.entropies),
            "view_sizes": {v: list(size) for v, size in record.shown_sizes.items()},
        }

    def add_result(self, done: bool) -> None:
        """After ``env.step``: end the conversation, or add the tool-result turn (feedback and new views)."""
        episode = self.base.episode
        if done or episode.stop_reason:
            self.finished, self.stop_reason = True, episode.stop_reason or "done"
            return
        if self.max_turns is not None and self.turn >= self.max_turns:
            self.finished, self.stop_reason = True, "max_turns"
            return
        step = episode.steps[-1]
        content = [text_item(self.style.tool_result_open + step.feedback)]
        for view in range(self._known_views, len(episode.views)):
            slot = self._admit(view, turn=self.turn)
            content += [text_item("\n"), image_item(slot.slot), text_item(self._label(slot))]
        self._known_views = len(episode.views)
        content.append(text_item(self.style.tool_result_close))
        self.messages += [assistant_message(self.turn - 1), {"role": "user", "content": content}]
        self._sync()

    def parse(self, text: str):
        """The env's own parse of ``text`` with character spans (one grammar for the env and the policy)."""
        return parse_action_text(text, self.base.tool_names, self.base.max_action_chars, with_spans=True)

    # ------------------------------------------------------------------ fork
    def fork(self, env: Any, key: Any) -> Conversation:
        """A copy of this record for an EVR branch, acting in ``env``.

        ``env`` must already hold this conversation's env state (``env.unwrapped.restore(self.base.snapshot())``).
        Parts, turn records and prepared images are immutable once made and are shared; every container, the image
        slots (the budget mutates them) and the messages (eviction edits them in place) are copied.
        """
        base = env.unwrapped
        if not isinstance(base, MedVRVQAEnv):
            raise TypeError(f"the VLM policy acts in MedVR envs, got {type(base).__name__}")
        child = copy.copy(self)
        child.env, child.base, child.key = env, base, key
        child.slots = [copy.copy(s) for s in self.slots]
        child.parts = list(self.parts)
        child.turns = list(self.turns)
        child.closed_segments = list(self.closed_segments)
        child.messages = copy.deepcopy(self.messages)
        return child

    # ------------------------------------------------------------------ images
    def _label(self, slot: ImageSlot) -> str:
        w, h = slot.prepared.shown_size
        return self.style.view_label.format(index=slot.view, width=w, height=h)

    def _pixels(self, view: int) -> np.ndarray:
        return self.base.episode.render_view(view)

    def _admit(self, view: int, turn: int) -> ImageSlot:
        """Show ``view``: prepare its image within the budget, evicting or shrinking older images if needed."""
        prepared = self.adapter.prepare_image(self._pixels(view), self.budget.new_image_cap())
        changed = False
        while True:
            live = [LiveImage(s.slot, s.prepared.tokens) for s in self.live_slots()]
            action = self.budget.next_action(live, prepared.tokens, self.adapter.can_downscale)
            if action is None:
                break
            if not changed:
                self._close_segment()
                changed = True
            slot = self.slots[action.slot]
            if action.kind == "downscale":
                smaller = self.adapter.prepare_image(self._pixels(slot.view), action.max_tokens)
                if smaller.tokens < slot.prepared.tokens:
                    slot.prepared, slot.downscaled = smaller, slot.downscaled + 1
                    self.downscales += 1
                    continue
            self._evict(slot)
        slot = ImageSlot(len(self.slots), view, prepared, turn)
        self.slots.append(slot)
        return slot

    def _evict(self, slot: ImageSlot) -> None:
        slot.evicted = True
        self.evictions += 1
        stub = self.style.evicted.format(index=slot.view)
        for message in getattr(self, "messages", []):
            content = message["content"]
            for i, item in enumerate(content):
                if item.get("type") == "image" and item.get("medvr_slot") == slot.slot:
                    content[i] = text_item(stub)

    # ------------------------------------------------------------------ pieces
    def _sync(self) -> None:
        """Bring the env-side parts in line with the messages (new piece appended; changed pieces re-processed)."""
        pieces = self.renderer.pieces(self.messages)
        piece_slots: list[list[int]] = [[] for _ in pieces]
        index = 0
        for message in self.messages:
            if message["role"] == "assistant":
                index += 1
                continue
            piece_slots[index] += [c["medvr_slot"] for c in message["content"] if c.get("type") == "image"]
        env_parts = [p for p in self.parts if p.kind == "env"]
        gen_parts = [p for p in self.parts if p.kind == "gen"]
        if len(pieces) != len(gen_parts) + 1:
            raise RuntimeError(f"{len(pieces)} prompt pieces for {len(gen_parts)} generated turns")
        rebuilt: list[Part] = []
        changed = False
        for i, text in enumerate(pieces):
            if i > 0:
                text = self._strip_end_of_turn(text, gen_parts[i - 1])
            slots = tuple((s, self.slots[s].prepared.shown_size) for s in piece_slots[i])
            if i < len(env_parts) and env_parts[i].text == text and env_parts[i].slots == slots:
                rebuilt.append(env_parts[i])
                continue
            if i < len(env_parts):
                changed = True
            rebuilt.append(self._process_piece(text, slots, first=i == 0))
        parts: list[Part] = []
        for i, env_part in enumerate(rebuilt):
            parts.append(env_part)
            if i < len(gen_parts):
                parts.append(gen_parts[i])
        self.parts = parts
        if changed:
            self.version += 1
            self.rebuilds += 1

    def _process_piece(self, text: str, slots: tuple[tuple[int, tuple[int, int]], ...], first: bool) -> Part:
        images = [self.slots[s].prepared for s, _ in slots]
        processed = self.adapter.process(text, [p.image for p in images], [p.tokens for p in images])
        ids = (self._bos if first and not text.startswith(self.tokenizer.bos_token or "\0") else []) + processed.ids
        return Part("env", ids, text=text, slots=slots, images=[p.image for p in images],
                    views=[self.slots[s].view for s, _ in slots], vision=processed.vision)

    def _strip_end_of_turn(self, text: str, gen: Part) -> str:
        """If the model ended its turn with the token the template closes turns with, do not insert it again."""
        if gen.ids and gen.ids[-1] in self.eos_ids:
            closing = self.tokenizer.decode([gen.ids[-1]], skip_special_tokens=False)
            if closing and text.startswith(closing):
                return text[len(closing):]
        return text

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Placeholders in the whole context equal the images in it (raises :class:`PlaceholderMismatch`)."""
        live = self.live_slots()
        items = sum(1 for m in self.messages for c in m["content"] if c.get("type") == "image")
        if items != len(live):
            raise PlaceholderMismatch(f"{items} images in the messages but {len(live)} live images")
        images = [im for p in self.parts for im in p.images]
        if len(images) != len(live):
            raise PlaceholderMismatch(f"{len(images)} images in the token sequence but {len(live)} live images")
        processed = sum(self.adapter.processed_images(p.ids, p.vision) for p in self.parts)
        self.adapter.check_counts(self.ids, len(live), processed, [s.prepared.tokens for s in live])

    # ------------------------------------------------------------------ records
    def _segment(self) -> Segment:
        ids: list[int] = []
        generated: list[bool] = []
        logprobs: list[float] = []
        entropies: list[float] = []
        images: list[Any] = []
        views: list[int] = []
        spans: list[tuple[int, int, int]] = []
        for p in self.parts:
            start = len(ids)
            ids += p.ids
            mine = p.kind == "gen" and p.segment == self.segment
            generated += [mine] * len(p.ids)
            logprobs += p.logprobs if mine else [math.nan] * len(p.ids)
            entropies += p.entropies if mine else [math.nan] * len(p.ids)
            images += p.images
            views += p.views
            if mine:
                spans.append((p.turn, start, len(ids)))
        return Segment(ids, generated, logprobs, entropies, images, views, spans)

    def _close_segment(self) -> None:
        if any(p.kind == "gen" and p.segment == self.segment for p in self.parts):
            self.closed_segments.append(self._segment())
            self.segment += 1

    def to_rollout(self) -> Rollout:
        return Rollout(
            key=self.key, turns=list(self.turns), segments=[*self.closed_segments, self._segment()],
            episode=self.base.episode.snapshot(), stop_reason=self.stop_reason or self.base.episode.stop_reason,
            rebuilds=self.rebuilds, evictions=self.evictions, downscales=self.downscales,
        )


__all__ = ["Conversation", "ImageSlot", "Part", "TurnOutput"]
