"""Registration from envs_registry.yaml: ids, idempotence, overrides, spawn workers, spec JSON, bad YAML."""

from __future__ import annotations

import multiprocessing as mp
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import medvr_env
from medvr_env.registration import RegistryError, load_registry, register_envs, registry_path

from .dataset_fixtures import make_kwargs

REPO_REGISTRY = Path(__file__).resolve().parent.parent / "envs_registry.yaml"


def test_every_yaml_id_is_registered():
    ids = [e["id"] for e in yaml.safe_load(REPO_REGISTRY.read_text())["envs"]]
    assert ids == medvr_env.ENV_IDS
    for env_id in ids:
        assert env_id in gym.registry
        assert gym.registry[env_id].entry_point == "medvr_env.env:MedVRVQAEnv"


def test_registering_again_is_silent_and_idempotent():
    before = dict(gym.registry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
    assert dict(gym.registry) == before


def test_registry_file_is_found():
    assert registry_path().name == "envs_registry.yaml"
    assert registry_path().is_file()


def test_make_kwargs_override_registry_kwargs():
    env = gym.make("MedVR-VQA-v0", obs_size=64, max_steps=3)
    assert env.spec.kwargs["obs_size"] == 64
    assert env.spec.kwargs["dataset"] == "procedural"  # from the YAML
    assert env.observation_space["image"].shape == (64, 64, 3)
    assert env.unwrapped.max_steps == 3
    env.close()


@pytest.mark.parametrize("env_id", medvr_env.ENV_IDS)
def test_spec_json_round_trip(env_id):
    env = gym.make(env_id, **make_kwargs(gym.spec(env_id)))
    spec = env.spec
    restored = gym.envs.registration.EnvSpec.from_json(spec.to_json())
    assert restored == spec
    env2 = gym.make(restored)
    assert type(env2.unwrapped) is type(env.unwrapped)
    assert [w.name for w in env2.spec.additional_wrappers] == [w.name for w in spec.additional_wrappers]
    env.close()
    env2.close()


def test_text_id_rebuilds_its_wrapper_from_spec():
    env = gym.make("MedVR-VQA-Text-v0")
    assert isinstance(env.action_space, gym.spaces.Text)
    rebuilt = gym.make(env.spec)
    assert isinstance(rebuilt.action_space, gym.spaces.Text)


def _make_in_child(queue):
    import gymnasium as gym_child

    env = gym_child.make("medvr_env:MedVR-VQA-v0")
    obs, _ = env.reset(seed=3)
    queue.put((obs["question"], obs["image"].shape))


def test_prefixed_id_works_in_a_spawned_process():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_make_in_child, args=(queue,))
    proc.start()
    question, shape = queue.get(timeout=120)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    local_obs, _ = gym.make("MedVR-VQA-v0").reset(seed=3)
    assert question == local_obs["question"]
    assert shape == (224, 224, 3)


def _write(tmp_path, text):
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, key",
    [
        ("schema: 1\nenvs: [{id: A-v0, entry_point: 'x:y', kwarg: {}}]\n", "kwarg"),
        ("schema: 1\nflavour: 2\nenvs: [{id: A-v0, entry_point: 'x:y'}]\n", "flavour"),
        ("schema: 1\ndefaults: {entrypoint: 'x:y'}\nenvs: [{id: A-v0}]\n", "entrypoint"),
        (
            "schema: 1\nenvs: [{id: A-v0, entry_point: 'x:y', additional_wrappers: [{name: W, entry_point: 'a:b', args: {}}]}]\n",
            "args",
        ),
    ],
)
def test_unknown_yaml_key_is_an_error_naming_it(tmp_path, text, key):
    with pytest.raises(RegistryError, match=f"unknown key '{key}'"):
        load_registry(_write(tmp_path, text))


@pytest.mark.parametrize(
    "text, message",
    [
        ("schema: 2\nenvs: [{id: A-v0, entry_point: 'x:y'}]\n", "unsupported schema"),
        ("schema: 1\nenvs: []\n", "non-empty list"),
        ("schema: 1\nenvs: [{id: 'no version', entry_point: 'x:y'}]\n", "Name-v0"),
        ("schema: 1\nenvs: [{id: A-v0}]\n", "no entry_point"),
        ("schema: 1\nenvs: [{id: A-v0, entry_point: 'x:y'}, {id: A-v0, entry_point: 'x:y'}]\n", "listed twice"),
        ("schema: [1\n", "not valid YAML"),
    ],
)
def test_malformed_registry_errors(tmp_path, text, message):
    with pytest.raises(RegistryError, match=message):
        load_registry(_write(tmp_path, text))


def test_wheel_ships_the_registry(tmp_path):
    """The built wheel carries envs_registry.yaml inside medvr_env/, where registry_path() looks first."""
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("hatchling", reason="hatchling (in the [dev] extra) builds the wheel offline")
    repo = REPO_REGISTRY.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(repo), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    wheel = next(tmp_path.glob("medvr-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "medvr_env/envs_registry.yaml" in names
    assert zipfile.ZipFile(wheel).read("medvr_env/envs_registry.yaml").decode() == REPO_REGISTRY.read_text()
    assert any(n.startswith("agents/") for n in names)


def test_importing_medvr_env_stays_light():
    """Vector-env workers import medvr_env; it must never pull in torch, transformers or agents."""
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, medvr_env; env = gym.make('MedVR-VQA-v0'); env.reset(seed=0); "
        "print(sorted(m for m in ('torch', 'transformers', 'agents') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
