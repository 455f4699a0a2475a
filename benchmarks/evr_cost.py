#!/usr/bin/env python
"""What EVR's shared prefixes save: a group of 16 with entropy-guided branching against 16 independent rollouts.

Same model (a random-weight Qwen2.5-VL built from a config, loaded back like a user's checkpoint, as in
``benchmarks/vlm_rollout.py``), same samples (procedural ``MedVR-VQA-Text-v0``), same process, interleaved rounds:

- **EVR**: ``VLMPolicy.rollout_groups(..., evr=EVRConfig(group_size=16))``: 8 independent rollouts per sample, 8
  branch slots filled by forks at the first coordinate token (the child reuses the parent's key/value cache rows
  and env state) or, when unused, by fresh rollouts;
- **independent**: the same call with ``independent=16`` (no branch slots): 16 rollouts per sample from the bare
  prompt, what plain GRPO sampling does.

Both run every sample's group in one batch. Printed: generated (sampled) tokens, prefill tokens (prompt, images,
tool results encoded), their sum (tokens through the model, which compute follows), forward passes and wall time per
round, and EVR / independent as ratios (the issue's target is <= 0.6x).

Random weights write no tool call and have flat entropy (~0.998 normalised, everywhere), so:

- :class:`agents.testing.ZoomGrammar` forces the protocol's structure (think text, zoom call JSON, answer) and lets
  the model sample each box number among digit tokens spelling a valid box; every episode is two zooms, then an
  answer;
- the branch gate ``H_tool - H_base > min_delta`` is opened with ``min_delta=-1`` (with flat entropy ΔH is ~0 and
  the gate would be a coin flip on float noise); the fork probability is still
  ``P = clip(P_base + γ·ΔH, 0, 1)`` with the defaults P_base = 0.5, γ = 0.5, i.e. ~0.5 per opportunity.

So the savings measured are those of the mechanism at this branching rate and this episode shape (where forks
land, how long the reasoning before the coordinates is); a trained model's rate follows its entropy.

Usage::

    python benchmarks/evr_cost.py --quick    # ~1-2 min on 2 cores
    python benchmarks/evr_cost.py            # ~5-8 min on 2 cores
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
from agents.testing import ZoomGrammar, build_tiny_vlm  # noqa: E402
from agents.vlm import EVRConfig, ImageBudget, SamplingConfig, VLMPolicy, load_vlm  # noqa: E402
from agents.vlm.loading import LoadedVLM  # noqa: E402

THINK_SENTENCE = "The region looks dense, look closer."


def make_env() -> gym.Env:
    return gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 64}, max_steps=8)


def make_policy(vlm: LoadedVLM, args: argparse.Namespace) -> VLMPolicy:
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=1.0, seed=0, max_new_tokens=args.max_new_tokens),
                       budget=ImageBudget(max_images=None))
    think = " ".join([THINK_SENTENCE] * args.think_sentences)
    policy.sampling.logits_hooks = [ZoomGrammar(policy.tokenizer, zooms=args.zooms, think=think,
                                                coordinate_range=(0, args.image_side // 2))]
    return policy


def run(policy: VLMPolicy, args: argparse.Namespace, independent: int, seed: int) -> dict[str, Any]:
    evr = EVRConfig(group_size=args.group, independent=independent, min_delta=-1.0, seed=seed)
    options = [{"index": i} for i in range(args.samples)]
    start = time.perf_counter()
    groups = policy.rollout_groups(make_env, options=options, evr=evr)
    seconds = time.perf_counter() - start
    bad = [r.stop_reason for g in groups for r in g.rollouts if r.stop_reason != "answered"]
    if bad or any(len(g.rollouts) != args.group for g in groups):
        raise RuntimeError(f"episodes did not follow the grammar or groups are incomplete: {bad[:5]}")
    stats = groups.stats
    return {"seconds": seconds, **stats, "model_tokens": stats["prefill_tokens"] + stats["generated_tokens"],
            "fork_turns": [b.turn for g in groups for b in g.branches if b.kept],
            "fork_tokens": [b.token for g in groups for b in g.branches if b.kept]}


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller model, one sample, one round (~1-2 min)")
    p.add_argument("--group", type=int, default=16, help="trajectories per sample (default 16)")
    p.add_argument("--samples", type=int, default=None, help="samples per batch (default 2; quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; quick 1)")
    p.add_argument("--hidden", type=int, default=None, help="text hidden size (default 256; quick 128)")
    p.add_argument("--layers", type=int, default=None, help="text and vision layers (default 4; quick 2)")
    p.add_argument("--image-side", type=int, default=224, help="Qwen pixel budget side (default 224)")
    p.add_argument("--zooms", type=int, default=2, help="zoom turns before the answer (default 2)")
    p.add_argument("--think-sentences", type=int, default=4, help="reasoning before each action (~9 tokens each)")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args(argv)
    args.samples = args.samples or (1 if args.quick else 2)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.hidden = args.hidden or (128 if args.quick else 256)
    args.layers = args.layers or (2 if args.quick else 4)
    torch.set_num_threads(args.threads)

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"evr_cost: python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPU cores, "
          f"{args.threads} torch thread(s), GPU: {gpu}")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm("qwen2_5_vl", Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                              image_side=args.image_side)
        vlm = load_vlm(str(path), device="cpu")
    params = sum(p.numel() for p in vlm.model.parameters())
    print(f"model: Qwen2.5-VL, random weights, text hidden {args.hidden}, {args.layers} layers, {params / 1e6:.2f} M "
          f"params, images up to {args.image_side}x{args.image_side} px; {args.samples} sample(s) x group "
          f"{args.group} in one batch; episodes: {args.zooms} zooms (sampled boxes) then an answer; "
          f"{args.rounds} timed round(s)")
    policy = make_policy(vlm, args)
    contenders = {"EVR": args.group // 2, "independent": args.group}
    run(policy, args, args.group // 2, seed=999)  # warm-up
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name, independent in contenders.items():
            results[name].append(run(policy, args, independent, seed=r))

    def med(name: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in results[name])

    rows = []
    for key, label in [("generated_tokens", "generated tokens"), ("prefill_tokens", "prefill tokens"),
                       ("model_tokens", "tokens through the model"), ("forwards", "forward passes"),
                       ("seconds", "wall time (s)")]:
        e, i = med("EVR", key), med("independent", key)
        fmt = (lambda v: f"{v:.2f}") if key == "seconds" else (lambda v: f"{v:,.0f}")
        rows.append([label, fmt(e), fmt(i), f"{e / i:.2f}x"])
    print(f"\nA group of {args.group} per sample: EVR branching vs independent rollouts (medians over rounds)")
    print(table(rows, ["per batch", "EVR", "independent", "EVR / independent"]))
    evr = results["EVR"]
    turns = [t for x in evr for t in x["fork_turns"]]
    tokens = [t for x in evr for t in x["fork_tokens"]]
    slots = (args.group - args.group // 2) * args.samples
    print(f"\nEVR branching (all rounds): {sum(x['branches'] for x in evr)} forks from "
          f"{sum(x['opportunities'] for x in evr)} opportunities (branch rate "
          f"{statistics.mean(x['branch_rate'] for x in evr):.2f}), "
          f"{sum(x['discarded_duplicates'] for x in evr)} discarded duplicates; of {slots * len(evr)} branch slots, "
          f"{sum(x['fresh_fills'] for x in evr)} went to fresh rollouts; forks by turn: "
          f"{ {t: turns.count(t) for t in sorted(set(turns))} }, fork token index median "
          f"{statistics.median(tokens) if tokens else float('nan'):.0f}; per round, shared prefixes saved "
          f"{med('EVR', 'shared_generated_tokens'):,.0f} generated and {med('EVR', 'shared_context_tokens'):,.0f} "
          f"context tokens")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "params": params, "results": results},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
