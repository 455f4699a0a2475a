"""The ``medvr`` command: ``run`` an agent, ``eval`` it on a dataset split, list ``envs`` and ``tools``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import gymnasium as gym

import medvr_env
from medvr_env.registration import load_registry
from medvr_env.tools import registered_tools, resolve_tool

from medvr_env.data.files import DatasetFormatError, DatasetNotFoundError

from .base import AGENTS, make_agent
from .evaluate import evaluate, table1_markdown
from .runner import run_episodes, write_json, write_text


def _parse_kwargs(pairs: Sequence[str], flag: str = "--env-kwarg") -> dict:
    """``key=value`` pairs; values are parsed as JSON when they can be (``max_steps=6``, ``split="test"``)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {flag} expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    if args.env not in gym.registry:
        print(f"error: unknown env id {args.env!r}; run `medvr envs` to list them", file=sys.stderr)
        return 2
    env_kwargs = _parse_kwargs(args.env_kwarg)
    if args.split:
        env_kwargs["split"] = args.split
    if args.data_root:
        env_kwargs["data_root"] = args.data_root
    try:
        env = gym.make(args.env, **env_kwargs)
        agent = make_agent(args.agent, **_agent_kwargs(args))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) / f"{args.env}_{args.agent}_{time.strftime('%Y%m%d-%H%M%S')}"
    summary, _ = run_episodes(
        env, agent, args.episodes, seed=args.seed, progress=not args.no_progress,
        trajectories=out / "trajectories.jsonl",
    )
    env.close()
    write_json(out / "summary.json", {"env": args.env, "agent": args.agent, "seed": args.seed,
                                      "env_kwargs": env_kwargs, **asdict(summary)})
    split = getattr(env.unwrapped.dataset, "split", "?")
    print(f"\n{args.agent} on {args.env} (split {split}), seed {args.seed}")
    print(summary.table())
    print(f"\ntrajectories: {out / 'trajectories.jsonl'}\nsummary:      {out / 'summary.json'}")
    return 0


def _agent_kwargs(args: argparse.Namespace) -> dict:
    """``--agent-kwarg`` pairs plus ``--model`` (for agents that load weights)."""
    kwargs = _parse_kwargs(getattr(args, "agent_kwarg", []), flag="--agent-kwarg")
    if getattr(args, "model", None):
        kwargs["model"] = args.model
    return kwargs


def cmd_eval(args: argparse.Namespace) -> int:
    unknown = [e for e in args.env if e not in gym.registry]
    if unknown:
        print(f"error: unknown env id(s) {unknown}; run `medvr envs` to list them", file=sys.stderr)
        return 2
    env_kwargs = _parse_kwargs(args.env_kwarg)
    if args.data_root:
        env_kwargs["data_root"] = args.data_root
    out = Path(args.out) / f"eval_{time.strftime('%Y%m%d-%H%M%S')}"
    results = []
    for env_id in args.env:
        for agent in args.agent:
            try:
                result = evaluate(
                    env_id, agent, split=args.split, limit=args.limit, seed=args.seed, env_kwargs=env_kwargs,
                    agent_kwargs=_agent_kwargs(args), progress=not args.no_progress,
                    trajectories=out / "trajectories" / f"{env_id}__{agent.replace(':', '.')}.jsonl",
                )
            except (DatasetNotFoundError, DatasetFormatError, FileNotFoundError, ValueError, TypeError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            results.append(result)
    table = table1_markdown(results)
    reports = "\n\n".join(r.report() for r in results)
    write_json(out / "results.json", {"table1": table, "results": [r.to_dict() for r in results]})
    write_text(out / "table.md", f"## Accuracy (%), laid out like MedVR Table 1\n\n{table}\n\n{reports}\n")
    print(f"\n{table}\n\n{reports}")
    print(f"\nresults:      {out / 'results.json'}\ntable:        {out / 'table.md'}\n"
          f"trajectories: {out / 'trajectories'}/")
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    for entry in load_registry():
        wrappers = ", ".join(w.name for w in entry["additional_wrappers"]) or "-"
        print(f"{entry['id']:<24} kwargs={json.dumps(entry['kwargs'])} wrappers={wrappers}")
    return 0


def cmd_tools(args: argparse.Namespace) -> int:
    tools = registered_tools()
    for name in sorted(tools):
        cls = resolve_tool(name)
        aliases = f" (aliases: {', '.join(cls.aliases)})" if cls.aliases else ""
        print(f"{name}{aliases}{' [terminal]' if cls.terminal else ''}")
        print(f"  {cls.description}")
        if args.schema:
            print("  " + json.dumps(cls.function_schema()["parameters"]))
    return 0


def _add_shared_options(cmd: argparse.ArgumentParser) -> None:
    """Options ``run`` and ``eval`` share: the agent's weights and options, data, seed, env kwargs, progress."""
    cmd.add_argument("--model", default=None, help="model path or hub id, for agents that load weights (--agent vlm)")
    cmd.add_argument("--agent-kwarg", action="append", default=[], metavar="KEY=VALUE",
                     help="agent options, e.g. max_new_tokens=256 temperature=0.7 max_images=6 (vlm)")
    cmd.add_argument("--data-root", default=None, help="dataset folder for real-data ids (else $MEDVR_DATA/<dataset>)")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the first reset (default: 0)")
    cmd.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE", help="extra env kwargs")
    cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvr", description="MedVR: medical visual reasoning environments and agents.")
    parser.add_argument("--version", action="version", version=f"medvr {medvr_env.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an agent for N episodes and report accuracy, zoom rate, steps")
    run.add_argument("--env", default="MedVR-VQA-v0", help="registered env id (default: MedVR-VQA-v0)")
    run.add_argument("--agent", default="scripted", help=f"one of {', '.join(sorted(AGENTS))} or package.module:Class")
    run.add_argument("--episodes", type=int, default=100, help="number of episodes (default: 100)")
    run.add_argument("--split", default=None, help="dataset split, e.g. train or test")
    run.add_argument("--out", default="runs", help="folder for trajectories and summary (default: runs/)")
    _add_shared_options(run)
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="evaluate agents on dataset splits; accuracy by answer/question type, tools, grounding")
    ev.add_argument("--env", action="append", required=True, help="registered env id; repeat for several benchmarks")
    ev.add_argument("--agent", action="append", default=None,
                    help=f"one of {', '.join(sorted(AGENTS))} or package.module:Class; repeat to compare (default: scripted)")
    ev.add_argument("--split", default="test", help="dataset split (default: test)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    ev.add_argument("--out", default="runs", help="folder for results.json, table.md, trajectories (default: runs/)")
    _add_shared_options(ev)
    ev.set_defaults(func=cmd_eval)

    # Parsed by agents.uncertainty.train itself (see main); listed here so that `medvr --help` shows it.
    sub.add_parser("train-reader", help="train the image reader that fills the entropy channel for SB3 policies "
                                        "([sb3] extra); --help for its options")

    envs = sub.add_parser("envs", help="list the registered env ids")
    envs.set_defaults(func=cmd_envs)

    tools = sub.add_parser("tools", help="list the registered tools")
    tools.add_argument("--schema", action="store_true", help="also print each tool's JSON schema")
    tools.set_defaults(func=cmd_tools)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train-reader"]:
        from agents.uncertainty.train import main as train_reader  # torch only for this command

        return train_reader(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "eval":
        args.agent = args.agent or ["scripted"]
        if args.limit is not None and args.limit < 1:
            print("error: --limit must be at least 1", file=sys.stderr)
            return 2
    if getattr(args, "episodes", 1) < 1:
        print("error: --episodes must be at least 1", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
