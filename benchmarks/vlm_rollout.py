#!/usr/bin/env python
"""Multi-turn VLM rollouts: what keeping the key/value cache between turns and batching episodes buy.

A random-weight Qwen2.5-VL (the paper's backbone family) is built from a config, saved and loaded back through
:func:`agents.vlm.load_vlm` like a user's checkpoint, and plays MedVR episodes on the procedural dataset
(``MedVR-VQA-Text-v0``). Every episode has the same four turns (zoom, zoom into the zoom, crop from the original,
answer), written through :class:`agents.testing.ForceText`: the model runs its real forward pass on every token,
but random weights would never write a valid tool call, and both contenders must do identical work.

Tables, all in one process:

1. **Cache reuse vs re-encoding**: episode time when the prefix's key/value cache is kept from turn to turn
   (only each tool result and its new image are encoded) against re-encoding the whole conversation, images
   included, at every turn (a loop around ``model.generate``); for one episode and for a batch.
2. **Batched vs one at a time**: ``B`` episodes in one batch against the same ``B`` episodes played one after
   another (both with cache reuse): episodes and generated tokens per second.
3. **GPU** (only with ``--gpu-3b`` on a CUDA machine): a Qwen2.5-VL-3B-sized model with random weights, built from
   its config (no download), a batch of 16 three-turn episodes: generated tokens per second and peak memory.

Contenders of a table are timed in interleaved rounds after a warm-up; times are medians over rounds.
Tiny models are run single-threaded by default (``--threads``): on a small shared CPU, thread spinning costs more
than the matrices.

Usage::

    python benchmarks/vlm_rollout.py --quick     # ~30 s on 2 cores
    python benchmarks/vlm_rollout.py             # ~7 min on 2 cores
    python benchmarks/vlm_rollout.py --gpu-3b    # adds table 3 when a GPU is present
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import medvr_env  # noqa: E402,F401
from agents.testing import ForceText, build_tiny_vlm  # noqa: E402
from agents.vlm import ImageBudget, SamplingConfig, VLMPolicy, load_vlm  # noqa: E402
from agents.vlm.loading import LoadedVLM, load_processor  # noqa: E402


def script(fmt: str, think_words: int = 6) -> list[str]:
    """Four turns: zoom, zoom into the zoom, crop from the original, answer (boxes in the family's format)."""
    think = "<think>" + " ".join(["The region looks dense, look closer."] * max(1, think_words // 6)) + "</think>"
    box = {"pixel": [8, 8, 48, 48], "norm": [0.2, 0.2, 0.7, 0.7], "norm1000": [200, 200, 700, 700]}[fmt]

    def call(name: str, **args: Any) -> str:
        return think + "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"

    return [call("zoom", bbox_2d=box), call("zoom", bbox_2d=box), call("crop", bbox_2d=box, source=0),
            think + "<answer>yes</answer>"]


def make_envs(n: int) -> list[gym.Env]:
    return [gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 64}, max_steps=8) for _ in range(n)]


def run(policy: VLMPolicy, envs: list[gym.Env], seed0: int) -> tuple[float, dict[str, float], int]:
    """One batched rollout; (seconds, engine stats, generated tokens)."""
    start = time.perf_counter()
    rollouts = policy.rollout(envs, seeds=[seed0 + i for i in range(len(envs))])
    seconds = time.perf_counter() - start
    bad = [r.stop_reason for r in rollouts if r.stop_reason != "answered" or len(r.turns) != 4]
    if bad:
        raise RuntimeError(f"episodes did not follow the script: {bad}")
    return seconds, dict(policy.last_stats), sum(len(t.token_ids) for r in rollouts for t in r.turns)


def make_policy(vlm: LoadedVLM, scripts: dict[int, list[str]], cache_reuse: bool, max_new_tokens: int) -> VLMPolicy:
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=1.0, seed=0, max_new_tokens=max_new_tokens),
                       budget=ImageBudget(max_images=8), cache_reuse=cache_reuse)
    policy.sampling.logits_hooks = [ForceText(policy.tokenizer, scripts)]
    return policy


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def bench_cpu(args: argparse.Namespace, vlm: LoadedVLM) -> dict[str, Any]:
    fmt = vlm.adapter.bbox_format
    turns = script(fmt, args.think_words)
    max_new = max(len(vlm.tokenizer(t).input_ids) for t in turns) + 4
    results: dict[str, Any] = {}

    # 1. cache reuse vs re-encoding
    rows = []
    for batch in sorted({1, args.batch}):
        scripts = {i: turns for i in range(batch)}
        envs = make_envs(batch)
        contenders = {"reuse": make_policy(vlm, scripts, True, max_new),
                      "re-encode": make_policy(vlm, scripts, False, max_new)}
        times: dict[str, list[float]] = {k: [] for k in contenders}
        stats: dict[str, dict[str, float]] = {}
        for name, policy in contenders.items():  # warm-up
            run(policy, envs, 0)
        ratios = []
        for r in range(args.rounds):
            for name, policy in contenders.items():
                seconds, stats[name], _ = run(policy, envs, 100 * r)
                times[name].append(seconds / batch)
            ratios.append(times["re-encode"][-1] / times["reuse"][-1])
        med = {k: statistics.median(v) for k, v in times.items()}
        results[f"cache_b{batch}"] = {"seconds_per_episode": med, "ratio": statistics.median(ratios),
                                      "prefill_tokens": {k: stats[k]["prefill_tokens"] for k in stats}}
        prefill = [stats[k]["prefill_tokens"] / batch for k in ("reuse", "re-encode")]
        rows.append([str(batch), f"{med['reuse'] * 1000:.0f}", f"{med['re-encode'] * 1000:.0f}",
                     f"{statistics.median(ratios):.2f}x", f"{prefill[0]:.0f} / {prefill[1]:.0f}"])
    print("\n1. Four-turn episode, key/value cache kept between turns vs the conversation re-encoded every turn")
    print(table(rows, ["batch", "reuse ms/episode", "re-encode ms/episode", "re-encode / reuse",
                       "prefill tokens/episode (reuse / re-encode)"]))

    # 2. batched vs one at a time
    batch = args.batch
    scripts = {i: turns for i in range(batch)}
    envs = make_envs(batch)
    batched = make_policy(vlm, scripts, True, max_new)
    single = make_policy(vlm, {0: turns}, True, max_new)
    run(batched, envs, 0)
    run(single, envs[:1], 0)
    t_batch, t_single, tokens = [], [], 0
    for r in range(args.rounds):
        seconds, _, tokens = run(batched, envs, 100 * r)
        t_batch.append(seconds)
        total = 0.0
        for i in range(batch):
            seconds, _, _ = run(single, [envs[i]], 100 * r + i)
            total += seconds
        t_single.append(total)
    b, s = statistics.median(t_batch), statistics.median(t_single)
    results["batching"] = {"batch": batch, "batched_s": b, "sequential_s": s, "ratio": s / b,
                           "generated_tokens": tokens}
    print(f"\n2. {batch} four-turn episodes: one batch vs one episode at a time (cache reuse in both)")
    print(table([["one batch", f"{batch / b:.2f}", f"{tokens / b:.0f}", f"{b:.2f}"],
                 ["one at a time", f"{batch / s:.2f}", f"{tokens / s:.0f}", f"{s:.2f}"],
                 ["speed-up", f"{s / b:.2f}x", "", ""]],
                ["mode", "episodes/s", "generated tokens/s", "seconds"]))
    return results


def qwen2_5_vl_3b_config(tok: Any) -> Any:
    """The configuration of Qwen2.5-VL-3B-Instruct (layer sizes as released), with this tokenizer's special ids."""
    import transformers as tf

    from agents.testing.tiny_vlms import _qwen_vision_ids

    ids = tok.convert_tokens_to_ids
    return tf.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                         num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                         bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=32, hidden_size=1280, out_hidden_size=2048, intermediate_size=3420, num_heads=16,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        tie_word_embeddings=True, **_qwen_vision_ids(tok))


def bench_gpu_3b(args: argparse.Namespace) -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        print("\n3. GPU: no GPU was lent to this run (torch.cuda.is_available() is False); the Qwen2.5-VL-3B-sized "
              "measurement (tokens/s and peak memory, batch of 16 three-turn episodes) was not made.")
        return None
    import transformers as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm("qwen2_5_vl", Path(tmp) / "proc", image_side=448)
        processor = load_processor(str(path))
    cfg = qwen2_5_vl_3b_config(processor.tokenizer)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = tf.Qwen2_5_VLForConditionalGeneration(cfg).to(torch.bfloat16).eval()
    from agents.vlm.families import make_adapter

    vlm = LoadedVLM(model, processor, make_adapter(model, processor), "random Qwen2.5-VL-3B config")
    params = sum(p.numel() for p in model.parameters())
    turns = script("pixel", think_words=120)[1:]  # zoom, crop, answer: three turns
    scripts = {i: turns for i in range(16)}
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=1.0, seed=0, max_new_tokens=400))
    policy.sampling.logits_hooks = [ForceText(policy.tokenizer, scripts)]
    envs = make_envs(16)
    policy.rollout(envs[:2], seeds=[0, 1])  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rollouts = policy.rollout(envs, seeds=list(range(16)))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(len(t.token_ids) for r in rollouts for t in r.turns)
    peak = torch.cuda.max_memory_allocated() / 2**30
    out = {"params": params, "seconds": seconds, "generated_tokens": tokens, "tokens_per_s": tokens / seconds,
           "peak_gib": peak, "prefill_tokens": policy.last_stats["prefill_tokens"],
           "device": torch.cuda.get_device_name()}
    print(f"\n3. GPU ({out['device']}): Qwen2.5-VL-3B-sized, random weights ({params / 1e9:.2f} B params, bf16), "
          "16 three-turn episodes in one batch")
    print(table([[f"{seconds:.1f}", str(tokens), f"{tokens / seconds:.0f}", f"{peak:.1f}"]],
                ["seconds", "generated tokens", "generated tokens/s", "peak memory GiB"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, small batch, one round (~30 s)")
    p.add_argument("--batch", type=int, default=None, help="episodes per batch (default 8; quick 4)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; quick 1)")
    p.add_argument("--hidden", type=int, default=None, help="text hidden size (default 256; quick 64)")
    p.add_argument("--layers", type=int, default=None, help="text and vision layers (default 4; quick 2)")
    p.add_argument("--image-side", type=int, default=None, help="Qwen pixel budget side (default 224; quick 112)")
    p.add_argument("--think-words", type=int, default=12, help="reasoning length per turn (in words, ~x1.5 tokens)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--gpu-3b", action="store_true", help="also run the Qwen2.5-VL-3B-sized model on a GPU")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args(argv)
    quick = args.quick
    args.batch = args.batch or (4 if quick else 8)
    args.rounds = args.rounds or (1 if quick else 3)
    args.hidden = args.hidden or (64 if quick else 256)
    args.layers = args.layers or (2 if quick else 4)
    args.image_side = args.image_side or (112 if quick else 224)
    torch.set_num_threads(args.threads)

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"vlm_rollout: python {platform.python_version()}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, {args.threads} torch thread(s), GPU: {gpu}")
    if gpu == "none":
        print("No GPU was lent to this task: tables 1-2 are CPU measurements of a small random-weight model.")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm("qwen2_5_vl", Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                              image_side=args.image_side)
        vlm = load_vlm(str(path), device="cpu")
    params = sum(p.numel() for p in vlm.model.parameters())
    print(f"model: Qwen2.5-VL, random weights, text hidden {args.hidden}, {args.layers} layers, "
          f"{params / 1e6:.2f} M params, images up to {args.image_side}x{args.image_side} px "
          f"(<= {(args.image_side // 28) ** 2} image tokens); batch {args.batch}, {args.rounds} timed round(s)")
    results = {"config": vars(args), "params": params, "cpu": bench_cpu(args, vlm)}
    if args.gpu_3b or torch.cuda.is_available():
        results["gpu_3b"] = bench_gpu_3b(args)
    else:
        print("\n3. GPU: no GPU was lent to this task; the Qwen2.5-VL-3B-sized measurement was not made.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
