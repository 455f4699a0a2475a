"""Classic RL on MedVR: PPO and MaskablePPO (stable-baselines3) learning when to look closer.

CleanRL style: one file, a dataclass of arguments parsed from the command line, all work
under ``if __name__ == "__main__"``. What it does:

1. **Entropy channel.** The patch reader (``agents.patch_reader``: the cached one, built on first use
   from train-split samples 0-1999; or ``--reader PATH``) reads the view the policy sees, at the
   observation size (128 px), and :class:`~agents.patch_reader.estimator.PatchReaderEstimator` puts
   the normalised entropy of its answer distribution in ``obs["entropy"]`` and ``obs["view_entropy"]``.
   The policies train on train-split samples from index 100,000 on, which the reader has never seen.
2. **Training.** PPO and MaskablePPO (``MultiInputPolicy``) on ``MedVR-VQA-Tensor-v0`` (128 px
   observations; ``MultiDiscrete([tool, region, answer])`` with a 4x4 grid, so one zoom shows a finding
   at 3.5-4.7 px; the train split), each once plain and once inside
   :class:`~medvr_env.wrappers.EntropyRegrounding` (EVR's regrounding as a reward term).
3. **Evaluation.** Every policy answers the same held-out test-split samples (deterministic
   actions): accuracy, zoom rate, mean zooms and steps; against the scripted no-zoom agent
   (the patch reader's answer rules on the 224 px first view), the patch reader's answer distribution on
   the policy's first view, and chance (a uniform guess among the answers that fit the question); the
   policy minus the no-zoom agent on the same samples, with a paired 95 % interval.
4. **Files** (atomic writes) in ``--out``: ``<run>.zip`` models, ``learning_curve.png``,
   ``results.json``; the table is printed as Markdown.

Run it::

    python examples/train_sb3_ppo.py --total-timesteps 20000      # the documented run, CPU minutes
    python examples/train_sb3_ppo.py --tiny                        # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np


@dataclass
class Args:
    """Command-line arguments (``--total-timesteps 20000``, ``--no-regrounding``, ...)."""

    total_timesteps: int = field(default=20_000, metadata={"help": "env steps per training run"})
    seed: int = field(default=0, metadata={"help": "seed of Python, NumPy, torch, the envs and the policies"})
    tiny: bool = field(default=False, metadata={"help": "a seconds-long smoke run (tests use it)"})
    n_envs: int = field(default=4, metadata={"help": "envs per DummyVecEnv"})
    n_steps: int = field(default=128, metadata={"help": "PPO rollout length per env"})
    train_samples: int = field(default=500, metadata={"help": "train-split samples the policies train on"})
    eval_samples: int = field(default=300, metadata={"help": "test-split samples every policy is evaluated on"})
    algos: str = field(default="ppo,maskable_ppo", metadata={"help": "comma-separated: ppo, maskable_ppo"})
    regrounding: bool = field(default=True, metadata={"help": "also train each algorithm with EntropyRegrounding"})
    reader: str = field(default="", metadata={"help": "patch-reader checkpoint; empty: the cached one (built on "
                                                      "first use; --tiny: a random-weight stand-in)"})
    out: str = field(default="runs/sb3_ppo", metadata={"help": "output folder"})
    plot: str = field(default="", metadata={"help": "also write the learning-curve PNG here"})
    threads: int = field(default=1, metadata={"help": "torch threads (1 is fastest on a shared 2-core machine)"})


POLICY_START = 100_000  # the policies train on train-split samples from here on; the reader on the first ones
OBS_SIZE = 128  # MedVR-VQA-Tensor-v0's observation size (envs_registry.yaml)


def parse_args(argv: list[str] | None = None) -> Args:
    """Build an argparse parser from the :class:`Args` fields (``--no-<flag>`` for booleans)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            kind = {"int": int, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            parser.add_argument(flag, type=kind, default=f.default,
                                help=f"{f.metadata['help']} (default: {f.default!r})")
    args = Args(**vars(parser.parse_args(argv)))
    if args.tiny:
        args = dataclasses.replace(args, total_timesteps=min(args.total_timesteps, 64), n_envs=1, n_steps=32,
                                   train_samples=4, eval_samples=3)
    for name in ("total_timesteps", "n_envs", "n_steps", "train_samples", "eval_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    unknown = set(args.algos.split(",")) - {"ppo", "maskable_ppo"}
    if unknown or not args.algos:
        parser.error(f"--algos takes ppo and/or maskable_ppo, got {args.algos!r}")
    return args


def atomic_write(path: Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


if __name__ == "__main__":
    args = parse_args()
    t_start = time.time()

    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    import medvr_env  # noqa: F401  (registers the ids)
    from agents.metrics import is_correct
    from agents.runner import summarize
    from agents.scripted import NoZoomAgent
    from agents.patch_reader.estimator import PatchReaderEstimator
    from agents.patch_reader.store import default_path, load_reader
    from medvr_env.data.procedural import ProceduralDataset
    from medvr_env.grading import grade_answer
    from medvr_env.wrappers import EntropyRegrounding

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- 1. the reader
    if args.reader:
        reader_path = Path(args.reader)
        reader = load_reader(reader_path)
    elif args.tiny:  # a smoke test must not spend minutes building the real reader
        from agents.patch_reader.testing import tiny_reader

        reader_path, reader = Path("(random-weight stand-in)"), tiny_reader()
    else:
        reader_path = default_path()
        reader = load_reader()
    reader_report = reader.config.meta.get("report", {})
    print(f"patch reader: {reader_path}")
    estimator = PatchReaderEstimator(reader, resolution=OBS_SIZE)

    # RL revisits the same samples: keep every rendered image (the dataset keeps 8 by default).
    train_data = ProceduralDataset("train", num_samples=args.train_samples, start_index=POLICY_START,
                                   image_cache=args.train_samples)
    test_data = ProceduralDataset("test", num_samples=args.eval_samples, image_cache=args.eval_samples)

    def make_env(split_data: ProceduralDataset, regrounding: bool, env_id: str = "MedVR-VQA-Tensor-v0") -> gym.Env:
        env = gym.make(env_id, dataset=split_data, split=split_data.split, uncertainty_estimator=estimator)
        return EntropyRegrounding(env) if regrounding else env

    # ---------------------------------------------------------------- 2. baselines on the test split
    def play(env: gym.Env, act: Callable[[Any, dict], Any], on_reset: Callable | None = None,
             last_infos: list | None = None) -> list:
        """Each test sample once, in order; returns the finished episode records (and the last infos)."""
        episodes = []
        for i in range(args.eval_samples):
            obs, info = env.reset(options={"index": i})
            if on_reset is not None:
                on_reset(env, obs, info)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(act(obs, info))
                done = terminated or truncated
            episodes.append(env.unwrapped.episode.snapshot())
            if last_infos is not None:
                last_infos.append(info)
        return episodes

    print("baselines on the test split ...", flush=True)
    base_env = gym.make("MedVR-VQA-v0", dataset=test_data, split="test")
    no_zoom_agent = NoZoomAgent(reader=reader)
    no_zoom_episodes = play(base_env, no_zoom_agent.act, lambda e, o, i: no_zoom_agent.reset(e.unwrapped, o, i))
    no_zoom = summarize(no_zoom_episodes)
    no_zoom_hits = np.array([float(is_correct(e)) for e in no_zoom_episodes])

    tensor_env = make_env(test_data, False)
    chance_terms, reader_hits = [], []
    for i in range(args.eval_samples):
        _, info = tensor_env.reset(options={"index": i})
        answers = tensor_env.get_wrapper_attr("codec").answer_mask()
        chance_terms.append(1.0 / answers.sum())
        episode = tensor_env.unwrapped.episode
        dist = estimator.distribution(episode)
        guess = max(dist, key=dist.get)
        s = episode.sample
        reader_hits.append(grade_answer(guess, s.answer, options=s.options, answer_type=s.answer_type).correct)
    baselines = {
        "no_zoom": dataclasses.asdict(no_zoom),
        "chance": float(np.mean(chance_terms)),
        "reader_first_view": float(np.mean(reader_hits)),
    }
    print(f"  no-zoom {no_zoom.accuracy:.3f}  reader (first view) {baselines['reader_first_view']:.3f}  "
          f"chance {baselines['chance']:.3f}")

    # ---------------------------------------------------------------- 3. training
    class Curve(BaseCallback):
        """Per finished training episode: (timestep, correct, zoomed, regrounding term); progress every ~10%."""

        def __init__(self, name: str, total: int) -> None:
            super().__init__()
            self.name, self.total, self.rows, self.next_report = name, total, [], total // 10
            self.zoomed: list[bool] = []

        def _on_step(self) -> bool:
            infos, dones = self.locals["infos"], self.locals["dones"]
            if not self.zoomed:
                self.zoomed = [False] * len(infos)
            for k, (info, done) in enumerate(zip(infos, dones)):
                self.zoomed[k] |= info.get("applied_box") is not None
                if done:
                    paid = info.get("reward_terms", {}).get("regrounding", 0.0)
                    self.rows.append((self.num_timesteps, float(info.get("is_success", False)),
                                      float(self.zoomed[k]), float(paid)))
                    self.zoomed[k] = False
            if self.num_timesteps >= self.next_report and self.rows:
                last = np.array(self.rows[-200:])
                print(f"  [{self.name}] {self.num_timesteps:>6}/{self.total} steps  "
                      f"train accuracy {last[:, 1].mean():.3f}  zoom rate {last[:, 2].mean():.3f}  "
                      f"({len(self.rows)} episodes)", flush=True)
                self.next_report += max(1, self.total // 10)
            return True

    def evaluate(model, masked: bool, regrounding: bool) -> dict[str, Any]:
        env = make_env(test_data, regrounding)

        def act(obs, info):
            if masked:
                return model.predict(obs, deterministic=True, action_masks=env.get_wrapper_attr("action_masks")())[0]
            return model.predict(obs, deterministic=True)[0]

        infos: list[dict] = []
        episodes = play(env, act, last_infos=infos)
        summary = dataclasses.asdict(summarize(episodes))
        diff = np.array([float(is_correct(e)) for e in episodes]) - no_zoom_hits
        half = 1.96 * float(diff.std(ddof=1)) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        summary["minus_no_zoom"] = [float(diff.mean()), half]  # paired, same samples: mean and 95 % half-width
        if regrounding:  # share of test episodes whose regrounding term was paid (correct after a rise + look)
            summary["regrounding_paid_rate"] = float(np.mean([i["reward_terms"]["regrounding"] > 0 for i in infos]))
        return summary

    ALGOS = {"ppo": (PPO, False), "maskable_ppo": (MaskablePPO, True)}
    runs: dict[str, dict[str, Any]] = {}
    for algo in args.algos.split(","):
        for reground in ([False, True] if args.regrounding else [False]):
            name = algo + ("+regrounding" if reground else "")
            cls, masked = ALGOS[algo]
            venv = DummyVecEnv([lambda: Monitor(make_env(train_data, reground)) for _ in range(args.n_envs)])
            venv.seed(args.seed)
            model = cls(
                "MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=min(128, args.n_steps * args.n_envs),
                n_epochs=4, learning_rate=3e-4, ent_coef=0.01, seed=args.seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": [64, 64], "features_extractor_kwargs": {"cnn_output_dim": 64}},
            )
            curve = Curve(name, args.total_timesteps)
            print(f"training {name} for {args.total_timesteps} steps ...", flush=True)
            t0 = time.time()
            model.learn(args.total_timesteps, callback=curve)
            seconds = time.time() - t0
            atomic_write(out / f"{name}.zip", lambda tmp: model.save(tmp))
            test = evaluate(model, masked, reground)
            print(f"  {name}: test accuracy {test['accuracy']:.3f}  zoom rate {test['zoom_rate']:.3f}  "
                  f"({seconds:.0f} s, {model.num_timesteps / seconds:.0f} steps/s)", flush=True)
            paid = [row[3] > 0 for row in curve.rows]
            runs[name] = {"test": test, "train_seconds": round(seconds, 1), "train_episodes": len(curve.rows),
                          "train_regrounding_paid_rate": float(np.mean(paid)) if paid and reground else None,
                          "curve": curve.rows}
            venv.close()

    # ---------------------------------------------------------------- 4. files
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    window = max(1, min(200, min((len(r["curve"]) for r in runs.values()), default=1) // 5))
    for name, run in runs.items():
        rows = np.array(run["curve"]) if run["curve"] else np.zeros((0, 4))
        if len(rows) >= window:
            kernel = np.ones(window) / window
            for ax, col in zip(axes, (1, 2)):
                ax.plot(rows[window - 1 :, 0], np.convolve(rows[:, col], kernel, mode="valid"), label=name)
    axes[0].axhline(no_zoom.accuracy, color="k", ls="--", lw=1, label="no-zoom agent (test)")
    axes[0].axhline(baselines["chance"], color="gray", ls=":", lw=1, label="chance (test)")
    axes[0].set(title=f"training accuracy (mean of last {window} episodes)", xlabel="env steps", ylabel="accuracy")
    axes[1].set(title="training zoom rate (episodes with a zoom or crop)", xlabel="env steps", ylabel="zoom rate",
                ylim=(-0.02, 1.02))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("MedVR-VQA-Tensor-v0: SB3 policies on the procedural task (CPU)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    for target in [out / "learning_curve.png"] + ([Path(args.plot)] if args.plot else []):
        atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)

    results = {
        "args": dataclasses.asdict(args),
        "env_id": "MedVR-VQA-Tensor-v0",
        "eval_samples": args.eval_samples,
        "reader": {"checkpoint": str(reader_path), "test": reader_report.get("test", {})},
        "obs_size": OBS_SIZE,
        "baselines": baselines,
        "runs": runs,
        "seconds": round(time.time() - t_start, 1),
    }
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))

    lines = ["| policy | test accuracy | zoom rate | mean zooms | mean steps | minus no-zoom (95 % CI) |",
             "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        t = run["test"]
        d, h = t["minus_no_zoom"]
        lines.append(f"| {name} | {t['accuracy']:.3f} | {t['zoom_rate']:.2f} | {t['mean_zooms']:.2f} "
                     f"| {t['mean_steps']:.2f} | {100 * d:+.1f} ± {100 * h:.1f} |")
    lines.append(f"| no-zoom scripted agent | {no_zoom.accuracy:.3f} | 0.00 | 0.00 | {no_zoom.mean_steps:.2f} | - |")
    lines.append(f"| patch reader, policy's first view | {baselines['reader_first_view']:.3f} "
                 "| 0.00 | 0.00 | 1.00 | - |")
    lines.append(f"| chance | {baselines['chance']:.3f} | - | - | - | - |")
    print("\n" + "\n".join(lines))
    print(f"\nresults: {out / 'results.json'}\nplot:    {out / 'learning_curve.png'}\n"
          f"total {results['seconds']:.0f} s")
    print(json.dumps({k: runs[k]["test"]["accuracy"] for k in runs}))
