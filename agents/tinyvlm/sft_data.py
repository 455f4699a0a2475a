"""Supervised trajectories for the tiny VLM, rendered by the VLM policy's own conversation code.

Each training example is an episode played with scripted turns through :class:`agents.vlm.conversation.Conversation`
(the class :class:`~agents.vlm.VLMPolicy` plays with) against a real :class:`~medvr_env.MedVRVQAEnv`: the same chat
template, system prompt, tool feedback, view labels and image placeholders as at inference, token for token. The
scripted turns are tokenised once and put where the model's own tokens would go; they are the training targets.

- VQA-RAD train: one turn, ``<answer>{answer}</answer>`` (all tools offered, as in evaluation).
- Procedural train: a zoom, then the answer (the option letter for multiple-choice questions); a share of episodes is
  played in an env that offers no tools (answer only), for the "without tools" condition.
  Zoom boxes come from ``boxes="eval"``: the question's evaluation boxes (their union, grown to at least a quarter
  of the image side), or ``boxes="random"``: a random box of the same size range anywhere (no grounding taught).
  Samples without evaluation boxes (a "no" to a presence question) get a random box in both modes.

Images are kept as keys of the prepared 224 px image bytes: the frozen encoder runs once per distinct image
(:class:`FeatureStore`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from agents.vlm.budget import ImageBudget
from agents.vlm.conversation import Conversation, TurnOutput
from agents.vlm.families import make_adapter
from agents.vlm.prompts import ChatRenderer, PromptStyle
from agents.vlm.sampling import end_of_turn_ids
from medvr_env import MedVRVQAEnv
from medvr_env.boxes import Box, box_to_agent
from medvr_env.protocol import render_tool_call
from medvr_env.tools import DEFAULT_TOOLS

from .tokenizer import NO_TOOLS

log = logging.getLogger(__name__)

BOX_SOURCES = ("eval", "random")
MIN_ZOOM_FRACTION = 0.25
MAX_RANDOM_FRACTION = 0.5


@dataclass
class Example:
    """One tokenised episode: ids, which ids are targets, and the keys of its images in placeholder order."""

    ids: list[int]
    target: list[bool]
    images: list[str]
    source: str
    sample_id: str = ""

    def first_image(self, image_token_id: int) -> int:
        """Index of the first image placeholder (all text before it is the shared system prompt)."""
        return self.ids.index(image_token_id) if image_token_id in self.ids else len(self.ids)


@dataclass
class RenderedSet:
    examples: list[Example] = field(default_factory=list)
    images: dict[str, Image.Image] = field(default_factory=dict)


def image_key(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()


class EpisodeRenderer:
    """Plays scripted episodes through the policy's conversation code for one model/processor."""

    def __init__(self, model: Any, processor: Any, style: PromptStyle | None = None) -> None:
        self.adapter = make_adapter(model, processor)
        self.renderer = ChatRenderer(processor)
        self.style = style or PromptStyle()
        self.tokenizer = self.adapter.tokenizer
        self.eos_ids = end_of_turn_ids(model, self.tokenizer)
        self.eos = self.tokenizer.eos_token_id
        self.bbox_format = self.adapter.bbox_format

    def play(self, env: MedVRVQAEnv, index: int, script: Any) -> tuple[Example, list[Image.Image], Any]:
        """Reset ``env`` to sample ``index``; ``script(env)`` gives each turn's text (called before each turn)."""
        obs, info = env.reset(options={"index": index})
        conv = Conversation(env, obs, info, adapter=self.adapter, renderer=self.renderer, budget=ImageBudget(),
                            style=self.style, eos_ids=self.eos_ids)
        while not conv.finished:
            text = script(env)
            if text is None:
                break
            ids = self.tokenizer(text, add_special_tokens=False).input_ids + [self.eos]
            n = len(ids)
            action = conv.add_turn(TurnOutput(ids, [0.0] * n, [0.0] * n, "eos"))
            _, _, terminated, truncated, _ = env.step(action)
            conv.add_result(terminated or truncated)
        rollout = conv.to_rollout()
        if len(rollout.segments) != 1:
            raise RuntimeError("an SFT episode changed its context (image budget); it cannot be one example")
        seg = rollout.segments[0]
        keys = [image_key(im) for im in seg.images]
        example = Example(list(seg.token_ids), list(seg.generated), keys, "", env.episode.sample.sample_id)
        return example, list(seg.images), rollout.episode


RENDER_VERSION = 2  # bump when the rendered examples change for the same settings (cached data.pt is re-rendered)


def answer_text(sample: Any) -> str:
    """The answer as the model should write it: the option letter for multiple choice, else the answer text in
    lower case with single spaces.

    Grading ignores case and spacing, but a model trained on both "Yes" (513 times in VQA-RAD train) and "yes" (315)
    splits one answer's probability over two first tokens, and greedy decoding then prefers "No" (738) even where
    "yes" is the likelier answer. One spelling per answer removes that.
    """
    answer = " ".join(str(sample.answer).split())
    options = list(sample.options or ())
    if options:
        lowered = [str(o).strip().lower() for o in options]
        if answer.lower() in lowered:
            return chr(ord("A") + lowered.index(answer.lower()))
    return answer.lower()


def zoom_box(sample: Any, size: tuple[int, int], boxes: str, rng: np.random.Generator) -> Box:
    """The region a scripted zoom looks at, in original pixels (see the module docstring)."""
    width, height = size
    side_min = MIN_ZOOM_FRACTION * min(width, height)
    if boxes == "eval" and sample.eval_boxes:
        x1 = min(b[0] for b in sample.eval_boxes)
        y1 = min(b[1] for b in sample.eval_boxes)
        x2 = max(b[2] for b in sample.eval_boxes)
        y2 = max(b[3] for b in sample.eval_boxes)
        w, h = max(x2 - x1, side_min), max(y2 - y1, side_min)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    else:
        w = h = rng.uniform(MIN_ZOOM_FRACTION, MAX_RANDOM_FRACTION) * min(width, height)
        cx, cy = rng.uniform(w / 2, width - w / 2), rng.uniform(h / 2, height - h / 2)
    w, h = min(w, width), min(h, height)
    # shift (not clip) a box that sticks out, so it keeps its size
    bx1 = int(round(np.clip(cx - w / 2, 0, width - w)))
    by1 = int(round(np.clip(cy - h / 2, 0, height - h)))
    bx2, by2 = min(width, bx1 + int(round(w))), min(height, by1 + int(round(h)))
    return Box(bx1, by1, bx2, by2)


def render_vqa(renderer: EpisodeRenderer, dataset: Any, out: RenderedSet, source: str, progress: bool = True,
               tools: Sequence[str] = DEFAULT_TOOLS) -> None:
    """One answer turn per sample of ``dataset`` (VQA-RAD style)."""
    env = MedVRVQAEnv(dataset=dataset, tools=tools, bbox_format=renderer.bbox_format)
    for i in tqdm(range(len(dataset)), desc=f"render {source}", disable=not progress, leave=False):
        sample = dataset[i]
        _add(out, renderer.play(env, i, Turns([f"<answer>{answer_text(sample)}</answer>"])), source)
    env.close()


def render_procedural(renderer: EpisodeRenderer, dataset: Any, out: RenderedSet, *, boxes: str = "eval",
                      no_tools_fraction: float = 0.25, seed: int = 0, progress: bool = True) -> None:
    """A zoom then the answer (or, for ``no_tools_fraction`` of samples, the answer alone with no tools offered)."""
    if boxes not in BOX_SOURCES:
        raise ValueError(f"boxes must be one of {BOX_SOURCES}, got {boxes!r}")
    env_tools = MedVRVQAEnv(dataset=dataset, bbox_format=renderer.bbox_format)
    env_plain = MedVRVQAEnv(dataset=dataset, tools=NO_TOOLS, bbox_format=renderer.bbox_format)
    rng = np.random.default_rng([seed, 12])
    for i in tqdm(range(len(dataset)), desc="render procedural", disable=not progress, leave=False):
        sample = dataset[i]
        answer = f"<answer>{answer_text(sample)}</answer>"
        if rng.random() < no_tools_fraction:
            _add(out, renderer.play(env_plain, i, Turns([answer])), "procedural-no-tools")
            continue

        script = ZoomThenAnswer(sample, boxes, rng, renderer.bbox_format, answer)
        _add(out, renderer.play(env_tools, i, script), f"procedural-zoom-{boxes}")
    env_tools.close()
    env_plain.close()


class Turns:
    """Script of fixed turns: each call gives the next text, then ``None``."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.turn = 0

    def __call__(self, env: MedVRVQAEnv) -> str | None:
        self.turn += 1
        return self.texts[self.turn - 1] if self.turn <= len(self.texts) else None


class ZoomThenAnswer:
    """Script of a procedural episode: a zoom on :func:`zoom_box` (read on view 0 after reset), then the answer."""

    def __init__(self, sample: Any, boxes: str, rng: np.random.Generator, bbox_format: str, answer: str) -> None:
        self.sample, self.boxes, self.rng, self.bbox_format, self.answer = sample, boxes, rng, bbox_format, answer
        self.turn = 0

    def __call__(self, env: MedVRVQAEnv) -> str | None:
        self.turn += 1
        if self.turn == 1:
            view = env.episode.views[0]
            box = zoom_box(self.sample, (view.box.width, view.box.height), self.boxes, self.rng)
            coords = [int(c) for c in box_to_agent(box, view.box, view.size, self.bbox_format)]
            return render_tool_call("zoom", {"bbox_2d": coords})
        return self.answer if self.turn == 2 else None


def _add(out: RenderedSet, played: tuple[Example, list[Image.Image], Any], source: str) -> None:
    example, images, _ = played
    example.source = source
    out.examples.append(example)
    for key, im in zip(example.images, images):
        out.images.setdefault(key, im)


class FeatureStore:
    """The frozen encoder's feature grid of every image, computed once (float16 on CPU)."""

    def __init__(self, features: dict[str, torch.Tensor] | None = None) -> None:
        self.features: dict[str, torch.Tensor] = dict(features or {})

    def encode(self, model: Any, images: dict[str, Image.Image], processor: Any, batch_size: int = 32,
               progress: bool = True) -> None:
        todo = [k for k in images if k not in self.features]
        model.eval()
        for start in tqdm(range(0, len(todo), batch_size), desc="encode images", disable=not progress, leave=False):
            keys = todo[start:start + batch_size]
            pv = processor.image_processor(images=[images[k] for k in keys], return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                grid = model.encode_images(pv)
            for k, g in zip(keys, grid):
                self.features[k] = g.to(torch.float16).clone()

    def stack(self, keys: Iterable[str]) -> torch.Tensor:
        return torch.stack([self.features[k] for k in keys]).float()

    def __len__(self) -> int:
        return len(self.features)


__all__ = ["BOX_SOURCES", "RENDER_VERSION", "EpisodeRenderer", "Example", "FeatureStore", "RenderedSet", "answer_text", "image_key",
           "render_procedural", "render_vqa", "zoom_box"]
