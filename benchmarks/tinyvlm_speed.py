#!/usr/bin/env python
"""The tiny VLM on a CPU: generated tokens per second and episode time, against a random-weight Qwen2.5-VL of the
same decoder size.

Contenders (both saved and loaded back through :func:`agents.vlm.load_vlm` like a user's checkpoint):

- **tiny**: MedVR's own model (``agents.tinyvlm``), the bundled shape (``SIZES["bundled"]``: Qwen2 decoder with
  hidden 256, 2 layers, intermediate 512); EfficientNet-Lite0 encoder (4.0 M parameters, real ImageNet weights), 49 image tokens per view.
  ``--model PATH`` times a trained checkpoint instead (same shape; the weights do not change the cost);
- **qwen2.5-vl**: ``Qwen2_5_VLForConditionalGeneration`` with the same text decoder size (hidden and layers
  from ``SIZES["bundled"]``) and the tiny random vision tower of :func:`agents.testing.build_tiny_vlm` (hidden 32), images
  up to 224x224 px (64 image tokens). Its vision tower is far smaller than EfficientNet-Lite0, so per image it is
  the cheaper encoder; the decoders are matched.

Tables (medians over interleaved rounds after a warm-up, single torch thread by default):

1. **Decoding**: ``model.generate`` on one image and a short question, 32 new tokens (greedy, ``min_new_tokens``),
   with the key/value cache: generated tokens per second.
2. **Episodes**: a two-turn MedVR episode through :class:`~agents.vlm.VLMPolicy` (a zoom, then the answer; written
   by :class:`agents.testing.ForceText` so both do identical work), one episode and a batch of 8:
   seconds per episode and generated tokens per second.

Usage::

    python benchmarks/tinyvlm_speed.py --quick      # ~1 min on 2 cores
    python benchmarks/tinyvlm_speed.py              # more rounds
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import medvr_env  # noqa: F401
from agents.testing import ForceText, build_tiny_vlm
from agents.tinyvlm import build_model
from agents.tinyvlm.build import SIZES
from agents.vlm import SamplingConfig, VLMPolicy, load_vlm
from agents.vlm.loading import LoadedVLM

BOX = {"pixel": [40, 40, 160, 160], "norm": [0.2, 0.2, 0.7, 0.7], "norm1000": [200, 200, 700, 700]}


def script(fmt: str) -> list[str]:
    box = ", ".join(str(v) for v in BOX[fmt])
    return ['<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [' + box + ']}}</tool_call>',
            "<answer>yes</answer>"]


def params(vlm: LoadedVLM) -> tuple[float, float]:
    """(decoder, whole model) parameters in millions."""
    total = sum(p.numel() for p in vlm.model.parameters())
    decoder = [*vlm.model.model.language_model.parameters(), *vlm.model.lm_head.parameters()]
    return sum(p.numel() for p in {id(p): p for p in decoder}.values()) / 1e6, total / 1e6


def decode_rate(vlm: LoadedVLM, new_tokens: int = 32) -> float:
    """Generated tokens per second of ``generate`` (greedy, cache on) for one image and a short question."""
    proc = vlm.processor
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a nodule?"}]}]
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    if "image_grid_thw" in inputs:
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == vlm.adapter.image_token_id).long()
    start = time.perf_counter()
    with torch.inference_mode():
        out = vlm.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    seconds = time.perf_counter() - start
    return (out.shape[1] - inputs["input_ids"].shape[1]) / seconds


def episodes(vlm: LoadedVLM, batch: int, seed: int) -> tuple[float, int]:
    """(seconds, generated tokens) of ``batch`` two-turn episodes in one batch."""
    turns = script(vlm.adapter.bbox_format)
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=1.0, seed=0, max_new_tokens=64))
    policy.sampling.logits_hooks = [ForceText(policy.tokenizer, {i: turns for i in range(batch)})]
    envs = [gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 64}, max_steps=4) for _ in range(batch)]
    start = time.perf_counter()
    rollouts = policy.rollout(envs, seeds=[seed + i for i in range(batch)])
    seconds = time.perf_counter() - start
    bad = [r.stop_reason for r in rollouts if len(r.turns) != 2]
    if bad:
        raise RuntimeError(f"episodes did not follow the script: {bad}")
    return seconds, sum(len(t.token_ids) for r in rollouts for t in r.turns)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a trained tiny VLM checkpoint (default: a new one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_path = args.model or build_model(Path(tmp) / "tiny", size="bundled")
        shape = SIZES["bundled"]
        qwen_path = build_tiny_vlm("qwen2_5_vl", Path(tmp) / "qwen", hidden_size=shape["hidden_size"],
                                   num_layers=shape["num_hidden_layers"], image_side=224)
        models = {"tiny": load_vlm(tiny_path, device="cpu"), "qwen2.5-vl": load_vlm(qwen_path, device="cpu")}
        print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
              f"{args.threads}, torch {torch.__version__}; {rounds} rounds")
        rows = []
        for name, vlm in models.items():
            dec, total = params(vlm)
            rows.append([name, f"{dec:.2f} M", f"{total:.2f} M", vlm.adapter.bbox_format])
        print("\nModels\n" + table(rows, ["model", "decoder params", "all params", "boxes"]))

        for vlm in models.values():  # warm-up
            decode_rate(vlm, 8)
            episodes(vlm, 1, 0)
        rates = {k: [] for k in models}
        ep1 = {k: [] for k in models}
        epb = {k: [] for k in models}
        tokb = {k: [] for k in models}
        for r in range(rounds):
            for name, vlm in models.items():
                rates[name].append(decode_rate(vlm))
                seconds, _ = episodes(vlm, 1, 100 * r)
                ep1[name].append(seconds)
                seconds, tokens = episodes(vlm, args.batch, 100 * r)
                epb[name].append(seconds / args.batch)
                tokb[name].append(tokens / seconds)
        med = lambda d: {k: statistics.median(v) for k, v in d.items()}
        rates, ep1, epb, tokb = med(rates), med(ep1), med(epb), med(tokb)
        rows = [[name, f"{rates[name]:.0f}", f"{ep1[name] * 1000:.0f}", f"{epb[name] * 1000:.0f}",
                 f"{tokb[name]:.0f}"] for name in models]
        rows.append(["tiny / qwen2.5-vl", f"{rates['tiny'] / rates['qwen2.5-vl']:.2f}x",
                     f"{ep1['tiny'] / ep1['qwen2.5-vl']:.2f}x", f"{epb['tiny'] / epb['qwen2.5-vl']:.2f}x",
                     f"{tokb['tiny'] / tokb['qwen2.5-vl']:.2f}x"])
        print("\nDecoding and two-turn episodes (zoom, answer) on the procedural task")
        print(table(rows, ["model", "generate tokens/s (1 image, 32 new)", "ms/episode, batch 1",
                           f"ms/episode, batch {args.batch}", f"generated tokens/s, batch {args.batch}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
