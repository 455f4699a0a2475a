"""What a checkpoint answers, per question type, next to the gold answers: does it read the image or answer a prior?

    python -m experiments.evr_cca.answers runs/evr_cca/warmstart3/model --questions 128 \
        --out experiments/evr_cca/results/warmstart_answers.md

Greedy episodes on the first ``--questions`` test questions (tools offered, as in arm 2), the three most frequent
predicted answers per question type against the gold answers' counts. A model that answers one constant per
question type has learned the answer prior, not to read the image.
"""

from __future__ import annotations

import argparse
import collections
from typing import Sequence

import gymnasium as gym

import medvr_env  # noqa: F401  (registers the env ids)
from agents.runner import write_text


def answer_histogram(model: str, questions: int = 128, batch: int = 16, max_new_tokens: int = 48,
                     max_turns: int = 3) -> str:
    """Markdown: per question type, the most frequent predicted answers and the gold answers' counts."""
    from agents.vlm import ImageBudget, SamplingConfig, VLMPolicy, load_vlm

    vlm = load_vlm(model, device="cpu", dtype="float32")
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens,
                                                    max_turns=max_turns, seed=0),
                       budget=ImageBudget(max_images=None))
    envs = [gym.make("MedVR-VQA-Text-v0", split="test", max_steps=3, dataset_kwargs={"num_samples": questions})
            for _ in range(min(batch, questions))]
    predicted: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    gold: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for start in range(0, questions, len(envs)):
        idx = list(range(start, min(questions, start + len(envs))))
        for r in policy.rollout(envs[:len(idx)], seeds=idx, options=[{"index": i} for i in idx]):
            qt = r.episode.sample.question_type
            predicted[qt][str(r.episode.grade.get("predicted")) if r.episode.grade else "(no answer)"] += 1
            gold[qt][r.episode.sample.answer] += 1
    for env in envs:
        env.close()
    lines = [f"Greedy answers of `{model}` on the first {questions} test questions (tools offered):", "",
             "| question type | most frequent predictions | gold answers |", "|---|---|---|"]
    for qt in sorted(predicted):
        pred = ", ".join(f"{a!r}: {n}" for a, n in predicted[qt].most_common(3))
        real = ", ".join(f"{a!r}: {n}" for a, n in gold[qt].most_common())
        lines.append(f"| {qt} | {pred} | {real} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.evr_cca.answers", description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--questions", type=int, default=128)
    p.add_argument("--out", default=None, help="write the Markdown table here (atomically) instead of printing it")
    args = p.parse_args(argv)
    text = answer_histogram(args.model, args.questions)
    if args.out:
        write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
