"""Register every env id listed in ``envs_registry.yaml`` with Gymnasium.

The YAML is the single source of truth. It ships inside the wheel (as
``medvr_env/envs_registry.yaml``) and is found with :mod:`importlib.resources`; in
an editable install the repository's top-level file is used. Unknown keys are an
error naming the key, and registering is idempotent (no "Overriding" warnings when
``import medvr_env`` runs again, for example in spawned vector-env workers).
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml
from gymnasium.envs.registration import WrapperSpec

REGISTRY_FILE = "envs_registry.yaml"
TOP_LEVEL_KEYS = {"schema", "defaults", "envs"}
ENV_KEYS = {
    "id",
    "description",
    "entry_point",
    "kwargs",
    "max_episode_steps",
    "reward_threshold",
    "nondeterministic",
    "order_enforce",
    "disable_env_checker",
    "additional_wrappers",
}
WRAPPER_KEYS = {"name", "entry_point", "kwargs"}
_ID = re.compile(r"^[A-Za-z][\w-]*-v\d+$")


class RegistryError(ValueError):
    """The registry file is malformed; the message names the file and the offending key or entry."""


def registry_path() -> Path:
    """The registry file: the packaged copy in a wheel, else the repository's top-level file."""
    packaged = importlib.resources.files("medvr_env") / REGISTRY_FILE
    if packaged.is_file():
        return Path(str(packaged))
    repo_file = Path(__file__).resolve().parent.parent / REGISTRY_FILE
    if repo_file.is_file():
        return repo_file
    raise RegistryError(f"{REGISTRY_FILE} not found inside the medvr_env package nor at {repo_file}")


def load_registry(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Read and validate the registry; returns ``gymnasium.register`` keyword sets."""
    path = Path(path) if path is not None else registry_path()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a mapping with keys {sorted(TOP_LEVEL_KEYS)}")
    _no_unknown(data, TOP_LEVEL_KEYS, f"{path}: top level")
    if data.get("schema") != 1:
        raise RegistryError(f"{path}: unsupported schema {data.get('schema')!r}; this version reads schema 1")
    defaults = data.get("defaults") or {}
    _no_unknown(defaults, ENV_KEYS - {"id"}, f"{path}: defaults")
    entries = data.get("envs")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(f"{path}: 'envs' must be a non-empty list")
    out, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: envs[{i}] must be a mapping")
        where = f"{path}: env {entry.get('id', i)!r}"
        _no_unknown(entry, ENV_KEYS, where)
        merged = {**defaults, **entry}
        env_id = merged.get("id")
        if not isinstance(env_id, str) or not _ID.match(env_id):
            raise RegistryError(f"{where}: id must look like 'Name-v0'")
        if env_id in seen:
            raise RegistryError(f"{where}: id listed twice")
        seen.add(env_id)
        if "entry_point" not in merged:
            raise RegistryError(f"{where}: no entry_point (set it on the env or under defaults)")
        merged.pop("description", None)
        wrappers = []
        for j, w in enumerate(merged.pop("additional_wrappers", None) or []):
            if not isinstance(w, dict):
                raise RegistryError(f"{where}: additional_wrappers[{j}] must be a mapping")
            _no_unknown(w, WRAPPER_KEYS, f"{where}: additional_wrappers[{j}]")
            if "name" not in w or "entry_point" not in w:
                raise RegistryError(f"{where}: additional_wrappers[{j}] needs 'name' and 'entry_point'")
            wrappers.append(WrapperSpec(name=w["name"], entry_point=w["entry_point"], kwargs=w.get("kwargs") or {}))
        merged["additional_wrappers"] = tuple(wrappers)
        merged["kwargs"] = dict(merged.get("kwargs") or {})
        out.append(merged)
    return out


def _no_unknown(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise RegistryError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {sorted(allowed)}")


def register_envs(path: str | Path | None = None) -> list[str]:
    """Register every id in the registry that Gymnasium does not know yet; returns all listed ids."""
    entries = load_registry(path)
    for entry in entries:
        if entry["id"] not in gym.registry:
            gym.register(**entry)
    return [e["id"] for e in entries]
