"""The six arms of the grid, as overrides of one base config, and the YAML files they are written to.

An arm file has two sections: ``arm`` (what the grid needs to know: id, name, which tool reward) and ``train`` (a
complete :class:`agents.train.TrainConfig` mapping: the base config with the arm's overrides merged in). Arms differ
only where the table below says; everything else (warm start, data, group size, learning rate, token budget) is
shared.

=====  ===========  ======  =======================  ===============================================
arm    name         tools   reward                   rollouts
=====  ===========  ======  =======================  ===============================================
1      outcome      no      accuracy                 independent
2      tools        yes     accuracy + format        independent
3      evr          yes     accuracy + format        EVR branching
4      cca          yes     + CCA tool reward        independent
5      evr_cca      yes     + CCA tool reward        EVR branching
6      box          yes     + box-supervised tool    EVR branching (arm 5 with the evaluation boxes as
                            reward (evaluation       the reference instead of the group's consensus: the
                            boxes; upper reference)  upper reference, never usable without annotations)
=====  ===========  ======  =======================  ===============================================
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from agents.runner import write_text
from agents.train.config import TrainConfig

HERE = Path(__file__).resolve().parent
BASE_CONFIG = HERE / "base.yaml"
CONFIG_DIR = HERE / "configs"
TOOL_REWARDS = ("none", "cca", "box")


@dataclass(frozen=True)
class Arm:
    """One arm: its id and name, what it changes in the base config, and where its tool reward comes from."""

    id: int
    name: str
    description: str
    overrides: Mapping[str, Any]
    tool_reward: str = "none"  # "none" | "cca" (agents.credit consensus) | "box" (evaluation boxes, arm 6 only)

    @property
    def key(self) -> str:
        return f"arm{self.id}_{self.name}"


_NO_TOOL_REWARD = {"rewards": {"tool": 0.0}, "cca": {"enabled": False}}
_CCA = {"rewards": {"tool": 1.0}, "cca": {"enabled": True}}
_EVR = {"evr": {"enabled": True}}

ARMS: tuple[Arm, ...] = (
    Arm(1, "outcome", "outcome reward only, no tools (the answer is the only action)",
        {"env": {"kwargs": {"tools": ["answer"], "max_steps": 1}}, "policy": {"max_turns": 1},
         "rewards": {"accuracy": 1.0, "format": 0.0, "tool": 0.0}, "cca": {"enabled": False}}),
    Arm(2, "tools", "tools allowed, outcome + format reward", _NO_TOOL_REWARD),
    Arm(3, "evr", "tools, outcome + format reward, EVR branching rollouts", {**_NO_TOOL_REWARD, **_EVR}),
    Arm(4, "cca", "tools, outcome + format + CCA tool reward", _CCA, tool_reward="cca"),
    Arm(5, "evr_cca", "tools, outcome + format + CCA tool reward, EVR branching", {**_CCA, **_EVR},
        tool_reward="cca"),
    Arm(6, "box", "arm 5 with a box-supervised tool reward (IoU with the evaluation boxes): upper reference",
        {"rewards": {"tool": 1.0}, "cca": {"enabled": False}, **_EVR}, tool_reward="box"),
)


def arm_by_key(key: str | int) -> Arm:
    """An arm by id (``5``), key (``arm5_evr_cca``) or name (``evr_cca``)."""
    for arm in ARMS:
        if str(key) in (str(arm.id), arm.key, arm.name):
            return arm
    raise KeyError(f"unknown arm {key!r}; arms: {', '.join(a.key for a in ARMS)}")


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, mappings recursively (lists and scalars are replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_base(path: str | Path = BASE_CONFIG) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    TrainConfig.from_dict(data, where=str(path))  # a bad base config fails here, naming the key
    return data


def arm_document(arm: Arm, base: Mapping[str, Any]) -> dict[str, Any]:
    """The arm file's content: ``{"arm": {...}, "train": <TrainConfig mapping>}`` (checked by TrainConfig)."""
    if arm.tool_reward not in TOOL_REWARDS:
        raise ValueError(f"arm {arm.key}: tool_reward must be one of {TOOL_REWARDS}, got {arm.tool_reward!r}")
    train = deep_merge(base, arm.overrides)
    TrainConfig.from_dict(train, where=f"arm {arm.key}")
    return {"arm": {"id": arm.id, "name": arm.name, "key": arm.key, "description": arm.description,
                    "tool_reward": arm.tool_reward}, "train": train}


def write_arm_configs(base_path: str | Path = BASE_CONFIG, out_dir: str | Path = CONFIG_DIR,
                      arms: tuple[Arm, ...] = ARMS) -> list[Path]:
    """Write one ``<key>.yaml`` per arm into ``out_dir`` (atomically); returns the paths."""
    base = read_base(base_path)
    paths = []
    for arm in arms:
        header = (f"# Generated from {Path(base_path).name} by experiments/evr_cca/arms.py (do not edit; edit the base "
                  f"or the arm's overrides).\n# Arm {arm.id}: {arm.description}\n")
        text = header + yaml.safe_dump(arm_document(arm, base), sort_keys=False)
        paths.append(write_text(Path(out_dir) / f"{arm.key}.yaml", text))
    return paths


def read_arm_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arm section, train mapping)`` of an arm file."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or set(data) != {"arm", "train"}:
        raise ValueError(f"{path}: an arm file has exactly two sections, 'arm' and 'train'")
    return dict(data["arm"]), dict(data["train"])


__all__ = ["ARMS", "Arm", "BASE_CONFIG", "CONFIG_DIR", "TOOL_REWARDS", "arm_by_key", "arm_document", "deep_merge",
           "read_arm_file", "read_base", "write_arm_configs"]
