"""The ``medvr`` command: ``run`` an agent, ``eval`` it on a dataset split, list ``envs`` and ``tools``."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn, Sequence

import gymnasium as gym

import medvr_env
from medvr_env.data.files import DatasetFormatError, DatasetNotFoundError
from medvr_env.data.images import ImageDecodeError, UnsafePathError
from medvr_env.registration import load_registry
from medvr_env.tools import registered_tools, resolve_tool

from .base import AGENTS, AgentSetupError, make_agent
from .cli_types import int_at_least
from .evaluate import EvaluationError, evaluate, table1_markdown
from .report.cli import add_parser as add_report_parser
from .report.cli import report_after_run
from .runner import Interrupted, partial_path, run_episodes, write_json, write_text

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_JSON_WORDS = {"true": True, "false": False, "null": None}


class UsageError(ValueError):
    """A mistake on the command line; ``main`` prints it as one line and exits with status 2."""


def parse_value(value: str, flag: str, key: str) -> Any:
    """A ``--env-kwarg``/``--agent-kwarg`` value: JSON if it starts with ``[``, ``{`` or ``"`` or is a JSON
    number, ``true``, ``false`` or ``null``; any other text is the string itself (``split=test``).

    Raises:
        UsageError: The value looks like JSON but does not parse; the message says where.
    """
    text = value.strip()
    if text in _JSON_WORDS:
        return _JSON_WORDS[text]
    if _JSON_NUMBER.fullmatch(text):
        return json.loads(text)
    if text[:1] not in ("[", "{", '"'):
        return value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{flag} {key}={value!r}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg} "
            f"(values starting with [ {{ or \" are JSON: put strings inside in double quotes and quote the "
            f"whole value for the shell, e.g. {key}='[\"zoom\", \"answer\"]')") from None


def _parse_kwargs(pairs: Sequence[str] | None, flag: str = "--env-kwarg") -> dict:
    """``key=value`` pairs; each value read by :func:`parse_value` (``max_steps=6``, ``tools=["zoom"]``, ``split=test``)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = parse_value(value, flag, key.strip())
    return out


DATA_ERRORS = (DatasetNotFoundError, DatasetFormatError, ImageDecodeError, UnsafePathError)
"""Problems with the user's data, reported as one line (the file and what is wrong with it)."""


def cmd_run(args: argparse.Namespace) -> int:
    _check_env_ids([args.env])
    env_kwargs = _parse_kwargs(args.env_kwarg)
    if args.split:
        env_kwargs["split"] = args.split
    if args.data_root:
        env_kwargs["data_root"] = args.data_root
    env = _make_env(args.env, env_kwargs)
    agent = _make_agent(args.agent, _agent_kwargs(args))
    out = _make_folder(Path(args.out) / f"{args.env}_{args.agent.replace(':', '.')}_{time.strftime('%Y%m%d-%H%M%S')}",
                       "--out")
    trajectories = out / "trajectories.jsonl"
    interrupted: Interrupted | None = None
    try:
        summary = run_episodes(env, agent, args.episodes, seed=args.seed, progress=not args.no_progress,
                               trajectories=trajectories)
    except Interrupted as exc:
        summary, interrupted = exc.partial, exc
    except DATA_ERRORS as exc:
        _discard_if_empty(out)
        raise UsageError(f"{exc} (finished episodes are in {partial_path(trajectories)})") from None
    except AgentSetupError as exc:
        _discard_if_empty(out)
        raise UsageError(f"agent {args.agent!r}: {exc}") from None
    finally:
        env.close()
    split = getattr(env.unwrapped.dataset, "split", "?")
    if summary is not None:
        write_json(out / "summary.json", {"env": args.env, "agent": args.agent, "seed": args.seed,
                                          "env_kwargs": env_kwargs, **asdict(summary),
                                          "episodes_requested": args.episodes, "interrupted": interrupted is not None})
        print(f"\n{args.agent} on {args.env} (split {split}), seed {args.seed}"
              + (f": interrupted, {summary.episodes} of {args.episodes} episodes" if interrupted else ""))
        print(summary.table())
        print(f"\ntrajectories: {partial_path(trajectories) if interrupted else trajectories}\n"
              f"summary:      {out / 'summary.json'}")
    if interrupted is not None:
        print(f"interrupted after {interrupted.done} of {interrupted.total} episodes", file=sys.stderr)
        return 130
    if not args.no_report:
        report_after_run(out, progress=not args.no_progress)
    return 0


def _check_env_ids(env_ids: Sequence[str]) -> None:
    unknown = [e for e in env_ids if e not in gym.registry]
    if unknown:
        raise UsageError(f"unknown env id {', '.join(map(repr, unknown))}; run `medvr envs` to list them")


def _make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gym.make`` with the user's options; a bad option or missing dataset is a :class:`UsageError`."""
    try:
        return gym.make(env_id, **env_kwargs)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise UsageError(f"{env_id}: {exc}") from None


def _make_agent(name: str, kwargs: dict[str, Any]) -> Any:
    try:
        return make_agent(name, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise UsageError(f"agent {name!r}: {exc}") from None


def _make_folder(path: Path, flag: str) -> Path:
    """Create the output folder now, so that a bad ``--out`` fails before any work is done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise UsageError(f"{flag}: cannot create the folder {path}: {why}") from None
    return path


def _discard_if_empty(folder: Path) -> None:
    """Remove the output folder of a run that stopped before finishing any episode (it holds only empty files)."""
    files = list(folder.iterdir())
    if all(f.is_file() and f.stat().st_size == 0 for f in files):
        for f in files:
            f.unlink()
        folder.rmdir()


def _agent_kwargs(args: argparse.Namespace) -> dict:
    """``--agent-kwarg`` pairs plus ``--model`` (for agents that load weights)."""
    kwargs = _parse_kwargs(getattr(args, "agent_kwarg", None), flag="--agent-kwarg")
    if getattr(args, "model", None):
        kwargs["model"] = args.model
    return kwargs


EVAL_SETTINGS = "eval.json"
"""What ``medvr eval`` saves in its output folder so that ``--resume`` evaluates the same thing."""
_EVAL_OPTIONS = ("env", "agent", "split", "limit", "seed", "env_kwarg", "agent_kwarg", "model", "data_root")


def _eval_settings(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The output folder and settings of this evaluation: new ones, or those saved by the run ``--resume`` continues."""
    if args.resume:
        out = Path(args.resume)
        given = [f"--{name.replace('_', '-')}" for name in _EVAL_OPTIONS if getattr(args, name) not in (None, [])]
        if given:
            raise UsageError(f"--resume {out} evaluates what {out / EVAL_SETTINGS} says; drop {', '.join(given)}")
        try:
            settings = json.loads((out / EVAL_SETTINGS).read_text(encoding="utf-8"))
            assert isinstance(settings, dict) and all(k in settings for k in ("env", "agent", "split", "seed"))
        except FileNotFoundError:
            raise UsageError(f"--resume {out}: no {EVAL_SETTINGS} there; give the folder `medvr eval` "
                             "printed (runs/eval_<date>-<time>)") from None
        except (OSError, ValueError, AssertionError) as exc:
            raise UsageError(f"--resume {out}: cannot read {out / EVAL_SETTINGS} ({exc or 'missing keys'})") from None
        settings["skip_bad_samples"] = bool(settings.get("skip_bad_samples")) or args.skip_bad_samples
        return out, settings
    if not args.env:
        raise UsageError("--env is required (or --resume DIR to continue an interrupted evaluation)")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    env_kwargs = _parse_kwargs(args.env_kwarg)
    if args.data_root:
        env_kwargs["data_root"] = str(Path(args.data_root).resolve())
    settings = {"env": args.env, "agent": args.agent or ["scripted"], "split": args.split or "test",
                "limit": args.limit, "seed": 0 if args.seed is None else args.seed, "env_kwargs": env_kwargs,
                "agent_kwargs": _agent_kwargs(args), "skip_bad_samples": args.skip_bad_samples}
    return Path(args.out) / f"eval_{time.strftime('%Y%m%d-%H%M%S')}", settings


def cmd_eval(args: argparse.Namespace) -> int:
    out, settings = _eval_settings(args)
    _check_env_ids(settings["env"])
    for agent in settings["agent"]:
        _make_agent(agent, settings.get("agent_kwargs") or {})  # fail on a bad agent before any evaluation
    env_kwargs = {**settings["env_kwargs"], "split": settings["split"]}
    envs = {env_id: _make_env(env_id, env_kwargs) for env_id in settings["env"]}  # a bad option fails here, first
    write_json(_make_folder(out, "--resume" if args.resume else "--out") / EVAL_SETTINGS, settings)
    results = []
    for env_id, env in envs.items():
        for agent in settings["agent"]:
            trajectories = out / "trajectories" / f"{env_id}__{agent.replace(':', '.')}.jsonl"
            try:
                result = evaluate(
                    env, agent, limit=settings["limit"], seed=settings["seed"], env_kwargs=env_kwargs,
                    agent_kwargs=settings.get("agent_kwargs") or {}, progress=not args.no_progress,
                    trajectories=trajectories, resume=bool(args.resume), skip_bad_samples=settings["skip_bad_samples"],
                )
            except Interrupted as exc:
                if exc.partial is not None:
                    results.append(exc.partial)
                if results:
                    print("\n\n".join(r.report() for r in results))
                print(f"interrupted: {exc.done} of {exc.total} questions of {env_id} with {agent} finished; "
                      f"continue with: medvr eval --resume {out}", file=sys.stderr)
                return 130
            except DATA_ERRORS as exc:
                hint = "" if settings["skip_bad_samples"] else "; --skip-bad-samples records unreadable images as failed"
                raise UsageError(f"{exc}{hint}; continue with: medvr eval --resume {out}") from None
            except (AgentSetupError, EvaluationError) as exc:
                raise UsageError(f"{env_id} with {agent}: {exc}") from None
            results.append(result)
        env.close()
    table = table1_markdown(results)
    reports = "\n\n".join(r.report() for r in results)
    write_json(out / "results.json", {"table1": table, "results": [r.to_dict() for r in results]})
    write_text(out / "table.md", f"## Accuracy (%), laid out like MedVR Table 1\n\n{table}\n\n{reports}\n")
    print(f"\n{table}\n\n{reports}")
    print(f"\nresults:      {out / 'results.json'}\ntable:        {out / 'table.md'}\n"
          f"trajectories: {out / 'trajectories'}/")
    if not args.no_report:
        report_after_run(out, progress=not args.no_progress)
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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_shared_options(cmd: argparse.ArgumentParser) -> None:
    """Options ``run`` and ``eval`` share: the agent's weights and options, data, seed, env kwargs, progress."""
    cmd.add_argument("--model", default=None, help="model path or hub id, for agents that load weights (--agent vlm)")
    cmd.add_argument("--agent-kwarg", action="append", default=[], metavar="KEY=VALUE",
                     help="agent options, e.g. max_new_tokens=256 temperature=0.7 max_images=6 (vlm)")
    cmd.add_argument("--data-root", default=None, help="dataset folder for real-data ids (else $MEDVR_DATA/<dataset>)")
    cmd.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the first reset (default: 0)")
    cmd.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE", help="extra env kwargs")
    cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmd.add_argument("--no-report", action="store_true", help="do not write report.html (medvr report) at the end")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medvr", description="MedVR: medical visual reasoning environments and agents.")
    parser.add_argument("--version", action="version", version=f"medvr {medvr_env.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an agent for N episodes and report accuracy, zoom rate, steps")
    run.add_argument("--env", default="MedVR-VQA-v0", help="registered env id (default: MedVR-VQA-v0)")
    run.add_argument("--agent", default="scripted", help=f"one of {', '.join(sorted(AGENTS))} or package.module:Class")
    run.add_argument("--episodes", type=int_at_least(1), default=100, help="number of episodes (default: 100)")
    run.add_argument("--split", default=None, help="dataset split, e.g. train or test")
    run.add_argument("--out", default="runs", help="folder for trajectories and summary (default: runs/)")
    _add_shared_options(run)
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="evaluate agents on dataset splits; accuracy by answer/question type, tools, grounding")
    ev.add_argument("--env", action="append", default=None,
                    help="registered env id; repeat for several benchmarks (required unless --resume)")
    ev.add_argument("--agent", action="append", default=None,
                    help=f"one of {', '.join(sorted(AGENTS))} or package.module:Class; repeat to compare (default: scripted)")
    ev.add_argument("--split", default=None, help="dataset split (default: test)")
    ev.add_argument("--limit", type=int_at_least(1), default=None, help="evaluate only the first N questions")
    ev.add_argument("--out", default="runs", help="folder for results.json, table.md, trajectories (default: runs/)")
    ev.add_argument("--resume", default=None, metavar="DIR",
                    help="continue the interrupted evaluation in DIR (runs/eval_<date>-<time>) with its saved "
                         "settings: finished questions are re-read from its trajectories, the rest are played")
    ev.add_argument("--skip-bad-samples", action="store_true",
                    help="record a sample whose image cannot be read as failed (listed in the report) and go on, "
                         "instead of stopping")
    _add_shared_options(ev)
    # None = not given, so that --resume can tell options it would ignore (defaults applied in _eval_settings).
    ev.set_defaults(seed=None, env_kwarg=None, agent_kwarg=None)
    ev.set_defaults(func=cmd_eval)

    # Parsed by agents.uncertainty.train itself (see main); listed here so that `medvr --help` shows it.
    sub.add_parser("train-reader", help="train the image reader that fills the entropy channel for SB3 policies "
                                        "([sb3] extra); --help for its options")
    sub.add_parser("train-patch-reader", help="train the patch reader the scripted, no-zoom and oracle agents read "
                                              "with (built on first use otherwise); --help for its options")
    sub.add_parser("train", help="GRPO training of a VLM policy on MedVR rollouts ([train] extra); --help for options")

    sub.add_parser("sft", help="supervised warm start of the tiny VLM (--bundled builds the `tiny` agent); "
                               "--help for its options")

    envs = sub.add_parser("envs", help="list the registered env ids")
    envs.set_defaults(func=cmd_envs)

    tools = sub.add_parser("tools", help="list the registered tools")
    tools.add_argument("--schema", action="store_true", help="also print each tool's JSON schema")
    tools.set_defaults(func=cmd_tools)

    add_report_parser(sub)
    return parser


DELEGATED: dict[str, str] = {
    "train-reader": "agents.uncertainty.train:main",  # torch
    "train-patch-reader": "agents.patch_reader.train:main",  # torch
    "train": "agents.train.cli:main",  # torch and TRL
    "sft": "agents.tinyvlm.sft:main",  # torch and transformers
}
"""Commands that parse their own options (``main(argv) -> int``), imported only when run so that the others start
fast without torch; ``build_parser`` lists them for ``medvr --help``."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in DELEGATED:
        module, _, name = DELEGATED[argv[0]].partition(":")
        try:
            command = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as exc:
            print(f"medvr {argv[0]}: error: {exc}; install the extra this command needs (see README)", file=sys.stderr)
            return 2
        try:
            return command(argv[1:])
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error, --help or --version: argparse has printed what to say
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"medvr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run (building the env, loading weights): nothing to keep
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
