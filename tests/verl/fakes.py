"""Test helpers for the verl integration (import only after ``pytest.importorskip("verl")``).

- :func:`compose_config`: the example config ``examples/verl/medvr_qwen25vl_7b.yaml`` composed by Hydra.
- :func:`pil_processor`: the tiny model's Qwen2.5-VL processor built from its PIL image processor (see there).
- :class:`FakeTokenServer`: verl's ``LLMServerClient.generate`` contract (ids in, ``TokenOutput`` out) with a
  scripted policy that writes MedVR's protocol: a zoom with sampled coordinates, then an answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from verl.workers.rollout.replica import TokenOutput

from tests.helpers import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "examples" / "verl"
HEAD = '<think>Look closer.</think>\n<tool_call>{"name": "zoom", "arguments": {"bbox_2d": ['
ASSISTANT = "<|im_start|>assistant\n"


def pil_processor(path: str | Path) -> Any:
    """The checkpoint's ``Qwen2_5_VLProcessor`` with the PIL image processor and no video processor.

    A substitute, for CPU machines only: under transformers 5.9 (verl's pin), ``AutoProcessor`` and
    ``AutoImageProcessor`` of Qwen-VL need torchvision, and the torchvision wheels on PyPI are CUDA builds that do
    not load next to the CPU torch. The PIL image processor makes the same grids and placeholder counts; verl's GPU
    install (``verl[vllm]``) has torchvision and loads the full processor.
    """
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.video_processing_utils import BaseVideoProcessor

    class NoVideoProcessor(BaseVideoProcessor):
        """Fills the processor's video slot; MedVR sends no video, so any call is a bug."""

        def __init__(self) -> None:
            pass

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("MedVR sends no video")

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        if argument_name == "video_processor":  # transformers' BaseVideoProcessor is a torchvision placeholder here
            return None
        return Qwen2_5_VLProcessor.check_argument_for_proper_class(self, argument_name, argument)

    # The same class name: verl binds get_rope_index by it.
    processor_class = type("Qwen2_5_VLProcessor", (Qwen2_5_VLProcessor,),
                           {"check_argument_for_proper_class": check_argument_for_proper_class})
    path = Path(path)
    template = (path / "chat_template.jinja").read_text() if (path / "chat_template.jinja").exists() else None
    return processor_class(image_processor=Qwen2VLImageProcessorPil.from_pretrained(path),
                               tokenizer=AutoTokenizer.from_pretrained(path), video_processor=NoVideoProcessor(),
                               chat_template=template)


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="medvr_qwen25vl_7b", overrides=overrides)


def cpu_overrides(model: Path, **medvr: Any) -> list[str]:
    """Overrides for a CPU test run: the tiny model, the in-memory test dataset, small groups."""
    out = [
        f"actor_rollout_ref.model.path={model}",
        "medvr.env.factory=tests.helpers:make_env",
        "medvr.env.kwargs.max_steps=6",
        "~medvr.env.kwargs.split",
        "data.max_response_length=2048",
    ]
    for key, value in medvr.items():
        out.append(f"medvr.{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return out


class FakeTokenServer:
    """A stand-in for verl's server manager: scripted MedVR turns, with the checks a real server relies on.

    Turn 1 writes a zoom whose four coordinates are drawn from a generator seeded by the request and the prompt
    length (different sessions, different boxes); a prompt that ends inside a tool call (an EVR branch's shared
    prefix) is completed with fresh coordinates. Turn 2 answers: correctly when the box's x1 is below
    ``correct_below``. Log-probs are ``-0.1`` on text and ``-1.5`` on digits; with ``top_k`` the top-k log-probs
    per token come back in ``extra_fields`` (flat on digits, peaked elsewhere), as the MedVR replica sends them.

    Every call checks that the prompt's image placeholders equal what the images passed with it expand to.
    """

    def __init__(self, tokenizer: Any, adapter: Any, top_k: int | None = None, correct_below: int = 30,
                 fixed_box: list[int] | None = None) -> None:
        self.tokenizer, self.adapter, self.top_k, self.correct_below = tokenizer, adapter, top_k, correct_below
        self.fixed_box = fixed_box  # every zoom writes this box (branches then repeat their parents)
        self.calls: list[dict[str, Any]] = []
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data: list[Any] | None = None, **kwargs: Any) -> TokenOutput:
        await asyncio.sleep(0)  # let other sessions interleave, as with a real server
        images = list(image_data or [])
        pads = sum(1 for t in prompt_ids if t == self.adapter.image_token_id)
        need = sum(self.adapter.image_tokens(im) for im in images)
        assert pads == need, f"{pads} image placeholders for images needing {need}"
        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        tail = text[text.rindex(ASSISTANT) + len(ASSISTANT):]
        rng = np.random.default_rng(zlib.crc32(f"{request_id}/{len(prompt_ids)}/{len(self.calls)}".encode()))
        if "<tool_response>" not in text or tail:
            x1, y1 = (int(v) for v in rng.integers(0, 50, size=2))
            box = [x1, y1, x1 + int(rng.integers(10, 30)), y1 + int(rng.integers(10, 30))]
            box = list(self.fixed_box) if self.fixed_box else box
            full = HEAD + ", ".join(map(str, box)) + "]}}</tool_call>"
            assert full.startswith(tail), f"a forced prefix that is not the protocol's: {tail!r}"
            reply = full[len(tail):]
        else:
            x1 = _first_box_x1(text)
            answer = SAMPLES[0].answer if x1 < self.correct_below else "no"
            reply = f"<think>Seen it.</think>\n<answer>{answer}</answer>"
        ids = self.tokenizer(reply, add_special_tokens=False).input_ids + [self.eos]
        ids = ids[: sampling_params.get("max_tokens", len(ids))]  # as vLLM: at most max_tokens
        pieces = [self.tokenizer.decode([t]) for t in ids]
        logprobs = [-1.5 if p.strip().isdigit() else -0.1 for p in pieces]
        extra: dict[str, Any] = {}
        if self.top_k:
            extra["medvr_top_logprobs"] = [
                [math.log(1.0 / self.top_k)] * self.top_k if p.strip().isdigit() else [-0.01] + [-8.0] * (self.top_k - 1)
                for p in pieces
            ]
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids), "images": images,
                           "params": dict(sampling_params), "reply": reply, "ids": ids})
        return TokenOutput(token_ids=ids, log_probs=logprobs, stop_reason="completed", extra_fields=extra)


def _first_box_x1(text: str) -> int:
    start = text.rindex('"bbox_2d": [') + len('"bbox_2d": [')
    return int(text[start:].split(",")[0])


class NoMultiModalDataset:
    """verl's dataset class hook: the MedVR loop never asks it for images (it renders its own prompts)."""

    @staticmethod
    async def process_multi_modal_info(messages, **kwargs):
        return None, None, None
