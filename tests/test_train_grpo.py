"""GRPO training on TRL (agents.train) with a tiny random-weight Qwen2.5-VL on CPU.

Random weights almost never write a valid tool call, so rollouts are steered with :class:`agents.testing.ForceText`
(the model still runs every forward; log-probs come from its own logits). Each test builds its own trainer on a
fresh copy of the weights (training changes them). Config and reward tests need neither torch nor TRL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agents.train.config import CCASettings, ConfigError, RewardSettings, TrainConfig
from agents.train.rewards import groups_of, reward_functions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ZOOM = '<think>Look closer.</think><tool_call>{"name": "zoom", "arguments": {"bbox_2d": [10, 10, 60, 60]}}</tool_call>'
BAD = '<think>Hmm.</think><tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>'
ANSWER = "<think>Done.</think><answer>yes</answer>"


# ---------------------------------------------------------------------- config and rewards (no torch)
def test_example_configs_parse():
    for name in ("grpo_tiny.yaml", "grpo_qwen25vl_7b.yaml"):
        config = TrainConfig.from_yaml(EXAMPLES / name)
        assert config.local_generation_batch() % config.num_generations == 0
    big = TrainConfig.from_yaml(EXAMPLES / "grpo_qwen25vl_7b.yaml")
    assert big.evr.enabled and big.cca.enabled and big.num_generations == 16 and big.grpo_kwargs()["beta"] == 0.001


@pytest.mark.parametrize("data, message", [
    ({"model": "m", "grpo": {"num_generations": 4, "per_device_train_batch_size": 6}}, "straddle processes"),
    ({"model": "m", "polcy": {}}, "did you mean 'policy'"),
    ({"model": "m", "cca": {"etta": 0.5}}, "did you mean 'eta'"),
    ({"model": "m", "grpo": {"temperature": 0.7}}, "policy.temperature"),
    ({"model": "m", "grpo": {"mask_truncated_completions": True}}, "stop strings"),
    ({"model": "m", "grpo": {"num_generations": 1, "per_device_train_batch_size": 1}}, ">= 2"),
    ({"grpo": {}}, "'model' is required"),
    ({"model": "m", "grpo": {"steps_per_generation": 2, "save_steps": 3}}, "cannot resume exactly"),
    ({"model": "m", "log_rollouts_every": -1}, "log_rollouts_every must be a whole number"),
])
def test_bad_configs_say_what_to_fix(data, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(data)


def test_groups_must_be_whole_and_contiguous():
    assert groups_of([7, 7, 3, 3], 2) == [range(0, 2), range(2, 4)]
    with pytest.raises(ValueError, match="incomplete groups"):
        groups_of([7, 7, 3], 2)  # a group split across processes
    with pytest.raises(ValueError, match="two separate runs"):
        groups_of([7, 3, 7], None)


def test_reward_functions_follow_the_method_formula():
    pytest.importorskip("agents.credit")
    import gymnasium as gym

    import medvr_env  # noqa: F401

    funcs, weights = reward_functions(RewardSettings(format_penalty=-0.2), CCASettings(enabled=True), 3)
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "tool"] and weights == [1.0, 1.0, 1.0]
    # one sample, three trajectories: two correct ones zoom on the same region, one wrong answer
    episodes = []
    for box in ([0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]):
        env = gym.make("MedVR-VQA-v0", dataset_kwargs={"num_samples": 2})
        env.reset(seed=0, options={"index": 0})
        env.step({"name": "zoom", "arguments": {"bbox_2d": box}})
        env.step({"name": "answer", "arguments": {"text": "x"}})
        episodes.append(env.unwrapped.episode)
    acc, fmt, tool = funcs
    accuracy = [1.0, 1.0, 0.0]
    kw = dict(completions=["a", "b", "c"], episode=episodes, group=[5, 5, 5], accuracy=accuracy,
              well_formed=[True, False, True])
    assert acc(**kw) == accuracy
    assert fmt(**kw) == [0.0, -0.2, 0.0]
    assert tool(**kw) == [1.0, 1.0, 0.0]  # agreeing correct zooms get 1.0; the wrong answer is gated to 0
    off = reward_functions(RewardSettings(), CCASettings(enabled=False), 3)[0][2]
    assert off(**kw) == [0.0, 0.0, 0.0]


def test_cli_checks_a_config(tmp_path, capsys):
    from agents.cli import main

    assert main(["train", "--config", str(EXAMPLES / "grpo_tiny.yaml"), "--check"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ngrpo: {num_generations: 4, per_device_train_batch_size: 6}\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "multiple of 4" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


# ---------------------------------------------------------------------- training on a tiny VLM
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl", reason="GRPO training needs the [train] extra: pip install -e '.[train]'")

import gymnasium as gym  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import medvr_env  # noqa: E402,F401
from agents.testing import ForceText, ZoomGrammar, build_tiny_vlm  # noqa: E402
from agents.train.callbacks import read_metrics  # noqa: E402
from agents.train.run import build_trainer  # noqa: E402
from agents.train.samples import ImageTokenMismatch, check_image_tokens, rollout_to_sample  # noqa: E402
from agents.train.trainer import latest_checkpoint  # noqa: E402
from agents.vlm import ImageBudget, SamplingConfig, VLMPolicy, load_vlm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny_qwen25"))


def make_config(tiny_path, out, *, group=2, batch=4, evr=None, **grpo) -> TrainConfig:
    grpo_section = {"num_generations": group, "per_device_train_batch_size": batch, "max_steps": 1,
                    "learning_rate": 1e-3, "beta": 0.0, "logging_steps": 1, "save_strategy": "no",
                    "disable_tqdm": True, **grpo}
    return TrainConfig.from_dict({
        "model": str(tiny_path), "output_dir": str(out), "seed": 0,
        "env": {"id": "MedVR-VQA-Text-v0", "kwargs": {"dataset_kwargs": {"num_samples": 4}, "max_steps": 3},
                "limit": batch // group},
        "policy": {"temperature": 1.0, "max_new_tokens": 64, "max_turns": 3, "device": "cpu"},
        "evr": evr or {},
        "grpo": grpo_section,
    })


def make_trainer(config, scripts=None, callbacks=()):
    trainer = build_trainer(config, callbacks=callbacks)
    if scripts is not None:
        trainer.policy.sampling.logits_hooks = [ForceText(trainer.policy.tokenizer, scripts)]
    return trainer


def params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_one_step_trains_on_the_crops(tiny_path, tmp_path):
    """The loss forward receives every crop: image_grid_thw has one row per image of every sample, pixel_values
    one row per patch, and the rollout's log-probs equal what that forward computes."""
    scripts = {0: [ZOOM, ANSWER], 1: [BAD, ANSWER], 2: [ZOOM, ANSWER], 3: [ZOOM, ZOOM, ANSWER]}
    trainer = make_trainer(make_config(tiny_path, tmp_path), scripts)
    seen = []

    def hook(module, args, kwargs):
        if torch.is_grad_enabled() and "pixel_values" in kwargs:  # the loss forward (the others run without grad)
            seen.append((kwargs["pixel_values"].shape[0], kwargs["image_grid_thw"].clone()))

    handle = trainer.policy.model.register_forward_pre_hook(hook, with_kwargs=True)
    before = params(trainer.model)
    trainer.train()
    handle.remove()

    samples = trainer._last_samples
    assert [s.fields["looks"] for s in samples] == [1, 0, 1, 2]
    assert [len(s.images) for s in samples] == [2, 1, 2, 3]
    assert len(seen) == 1
    patches, grid = seen[0]
    assert grid.shape[0] == 8 and patches == int(grid.prod(-1).sum())
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "one step changed no weight"

    # the same batch through TRL's scoring: same tokens, same images -> the rollout's own log-probs
    trainer.model.train()
    rows = [{"prompt": "q", "sample_index": i // 2} for i in range(4)]
    out = trainer._generate_and_score_completions(rows)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, out["completion_ids"].size(1), num_images=out["num_images"],
            pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"],
            mm_token_type_ids=out["mm_token_type_ids"])
    image_id = trainer.policy.adapter.image_token_id
    for b, s in enumerate(trainer._last_samples):
        gen = torch.tensor(s.tool_mask, dtype=torch.bool)
        assert 0 < gen.sum() < len(gen)  # env-inserted tokens are in the completion and out of the loss
        assert not any(m for t, m in zip(s.completion_ids, s.tool_mask) if t == image_id)
        assert torch.equal(out["tool_mask"][b, :len(gen)].bool(), gen)
        got, want = logps[b, :len(gen)][gen], torch.tensor(s.logprobs)[gen]
        assert torch.allclose(got, want, atol=5e-3), float((got - want).abs().max())


def test_loss_on_a_fixed_batch_goes_down(tiny_path, tmp_path):
    """num_iterations=4 reuses one generated batch for four optimizer steps; its clipped surrogate loss falls."""
    scripts = {0: [ANSWER], 1: [BAD, ANSWER], 2: [BAD, ANSWER], 3: [ANSWER]}  # rewards 0, -0.2, -0.2, 0
    config = make_config(tiny_path, tmp_path, max_steps=4, num_iterations=4, learning_rate=3e-3, loss_type="grpo")
    trainer = make_trainer(config, scripts)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 1e-3, losses
    records = read_metrics(Path(config.output_dir) / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert records[0]["rewards/format/mean"] == pytest.approx(-0.1)
    assert records[0]["medvr/well_formed"] == pytest.approx(0.5) and records[0]["medvr/answered"] == 1.0


class Killed(Exception):
    pass


class KillAtStep(TrainerCallback):
    """Raises at the start of step ``step + 1`` (after checkpoint ``step`` was written): a killed run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed()


def test_kill_and_resume_gives_the_same_next_step(tiny_path, tmp_path):
    """A run killed after checkpoint 1 and resumed plays and trains step 2 exactly as an uninterrupted run."""
    scripts = {0: [ANSWER]}  # member 0 answers; member 1 samples freely (sampler seeds must replay)
    kw = dict(group=2, batch=2, max_steps=2, save_strategy="steps", save_steps=1)

    straight = make_trainer(make_config(tiny_path, tmp_path / "a", **kw), scripts)
    straight.train()
    want_params = params(straight.model)
    want_text = [s.text for s in straight._last_samples]

    killed = make_trainer(make_config(tiny_path, tmp_path / "b", **kw), scripts, callbacks=[KillAtStep(1)])
    with pytest.raises(Killed):
        killed.train()
    checkpoint = latest_checkpoint(tmp_path / "b")
    assert checkpoint is not None and checkpoint.name == "checkpoint-1"
    (tmp_path / "b" / "checkpoint-2").mkdir()  # a save cut short: no completion marker, never resumed from
    assert latest_checkpoint(tmp_path / "b") == checkpoint

    resumed = make_trainer(make_config(tiny_path, tmp_path / "b", **kw), scripts)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert [s.text for s in resumed._last_samples] == want_text
    got_params = params(resumed.model)
    for k in want_params:
        assert torch.allclose(got_params[k], want_params[k], atol=1e-6), k
    loss = lambda t: [r["loss"] for r in t.state.log_history if "loss" in r]  # noqa: E731
    assert loss(resumed)[-1] == pytest.approx(loss(straight)[-1], abs=1e-6)
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2]  # the killed run's lines and the resumed run's read as one run
    state = json.loads((tmp_path / "b" / "checkpoint-2" / "medvr_state.json").read_text())
    assert state["global_step"] == 2 and state["complete"]


def test_image_token_check_raises_on_a_mismatch(tiny_path):
    vlm = load_vlm(tiny_path, device="cpu")
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=1.0, max_new_tokens=64, seed=0),
                       budget=ImageBudget(max_images=None, max_image_tokens=None))
    policy.sampling.logits_hooks = [ForceText(policy.tokenizer, {0: [ZOOM, ANSWER]})]
    env = gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 2}, max_steps=3)
    (rollout,) = policy.rollout([env], seeds=[0])
    sample = rollout_to_sample(rollout)
    adapter = policy.adapter
    check_image_tokens([sample], adapter.image_token_id, adapter.image_tokens)  # consistent: no error

    dropped = rollout_to_sample(rollout)
    dropped.images.pop()  # a crop without its pixels
    with pytest.raises(ImageTokenMismatch, match="sample 1 has"):
        check_image_tokens([sample, dropped], adapter.image_token_id, adapter.image_tokens)
    cut = rollout_to_sample(rollout)
    at = cut.completion_ids.index(adapter.image_token_id)
    del cut.completion_ids[at], cut.tool_mask[at], cut.logprobs[at]  # a placeholder run cut short
    with pytest.raises(ImageTokenMismatch, match="sample 0"):
        check_image_tokens([cut], adapter.image_token_id, adapter.image_tokens)
    trained = rollout_to_sample(rollout)
    trained.tool_mask[at] = 1
    with pytest.raises(ImageTokenMismatch, match="marked as generated"):
        check_image_tokens([trained], adapter.image_token_id, adapter.image_tokens)


def test_an_evicting_image_budget_is_refused(tiny_path, tmp_path):
    from agents.train.trainer import MedVRGRPOTrainer

    trainer = make_trainer(make_config(tiny_path, tmp_path))
    policy = trainer.policy
    policy.budget = ImageBudget(max_images=4)
    with pytest.raises(ValueError, match="never evicts|one token sequence"):
        MedVRGRPOTrainer(policy, lambda: None, reward_funcs=trainer.reward_funcs, args=trainer.args,
                         train_dataset=trainer.train_dataset)


def test_the_example_trains_a_tiny_vlm(tmp_path, monkeypatch, capsys):
    """examples/train_grpo.py --tiny: three GRPO steps on CPU, a final checkpoint, a one-line summary."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_grpo_example", EXAMPLES / "train_grpo.py")
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, spec.name, example)  # dataclasses look their module up
    spec.loader.exec_module(example)
    monkeypatch.setattr("sys.argv", ["train_grpo.py", "--tiny", "--output-dir", str(tmp_path)])
    example.main()
    assert "done: 3 steps" in capsys.readouterr().out
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert latest_checkpoint(tmp_path).name == "checkpoint-3"


def test_evr_groups_train_with_their_branches(tiny_path, tmp_path):
    """evr.enabled: each group comes from VLMPolicy.rollout_groups (half independent, half branched at the first
    box coordinate); the branches train like any trajectory, crops included, and the branch rate is logged."""
    evr = {"enabled": True, "p_base": 1.0, "gamma": 0.0, "min_delta": -1.0}  # every fork opportunity branches
    trainer = make_trainer(make_config(tiny_path, tmp_path, group=4, batch=4, evr=evr))
    trainer.policy.sampling.logits_hooks = [ZoomGrammar(trainer.policy.tokenizer, zooms=1, coordinate_range=(0, 80))]
    grids = []

    def hook(module, args, kwargs):
        if torch.is_grad_enabled() and "image_grid_thw" in kwargs:
            grids.append(kwargs["image_grid_thw"].shape[0])

    handle = trainer.policy.model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.train()
    handle.remove()
    samples = trainer._last_samples
    assert len(samples) == 4 and all(len(s.images) == 2 for s in samples)  # view 0 + one crop each
    assert grids == [8]
    branched = [s.fields["branched"] for s in samples]
    assert branched[:2] == [False, False] and any(branched[2:])
    logged = next(r for r in trainer.state.log_history if "loss" in r)
    assert logged["evr/branch_rate"] > 0 and logged["medvr/branched"] == pytest.approx(sum(branched) / 4)
    assert logged["evr/shared_generated_tokens"] > 0


def test_images_dropped_by_trl_are_an_error(tiny_path, tmp_path):
    """When TRL's image processor disagrees with the policy's placeholders, TRL drops every image of the batch
    without a word (its has_mismatch fallback); the trainer turns that into an error before the loss."""
    import copy

    trainer = make_trainer(make_config(tiny_path, tmp_path), {0: [ZOOM, ANSWER]})
    other = copy.deepcopy(trainer.processing_class)  # the trainer's processor, made to resize images smaller
    side = 56
    other.image_processor.size = {"shortest_edge": side * side // 4, "longest_edge": side * side}
    other.image_processor.max_pixels = side * side
    trainer.processing_class = other
    trainer.model.train()
    rows = [{"prompt": "q", "sample_index": i // 2} for i in range(4)]
    with pytest.raises(ImageTokenMismatch, match="lost its images"):
        trainer._generate_and_score_completions(rows)


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    from agents.train.run import resolve_resume

    config = TrainConfig.from_dict({"model": "m", "output_dir": str(tmp_path)})
    assert resolve_resume(config, "auto") is None  # nothing yet: a fresh start
    for step, complete in ((5, True), (10, True), (15, False)):  # 15: a save cut short
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "medvr_state.json").write_text(json.dumps({"global_step": step, "complete": True}))
    assert resolve_resume(config, "auto") == str(tmp_path / "checkpoint-10")
    assert resolve_resume(config, "never") is None
    assert resolve_resume(config, str(tmp_path / "checkpoint-5")) == str(tmp_path / "checkpoint-5")
    with pytest.raises(ConfigError, match="not a complete MedVR checkpoint"):
        resolve_resume(config, str(tmp_path / "checkpoint-15"))


def test_medvr_train_runs_and_resumes_from_its_output_dir(tiny_path, tmp_path, capsys):
    """`medvr train --config FILE`: config.yaml, metrics.jsonl, checkpoints, final/; run again with more steps and it
    continues from the last complete checkpoint."""
    import yaml

    from agents.cli import main

    config = yaml.safe_load((EXAMPLES / "grpo_tiny.yaml").read_text())
    config.update(model=str(tiny_path), output_dir=str(tmp_path / "run"))
    config["policy"]["device"] = "cpu"
    config["grpo"].update(max_steps=1, save_steps=1, disable_tqdm=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--no-report"]) == 0
    out = tmp_path / "run"
    assert (out / "config.yaml").is_file() and (out / "final" / "model.safetensors").is_file()
    assert latest_checkpoint(out).name == "checkpoint-1"
    assert not (out / "report.html").exists()  # --no-report
    assert (out / "final" / "preprocessor_config.json").is_file()  # the image settings Qwen-VL needs to reload
    from agents.vlm.loading import load_vlm

    assert load_vlm(str(out / "final"), device="cpu").model is not None  # final/ is a checkpoint the policy loads
    assert main(["train", "--config", str(path), "--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "report:" in printed
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2]
    assert latest_checkpoint(out).name == "checkpoint-2"
    # rollouts.jsonl: the first run's generation (step 0) kept, the resumed run's (step 1) appended, one group each
    records = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    groups = {}
    for r in records:
        groups.setdefault(r["group"]["id"], []).append(r)
    assert sorted(g[0]["group"]["step"] for g in groups.values()) == [0, 1]
    for members in groups.values():
        assert [m["group"]["index"] for m in members] == list(range(config["grpo"]["num_generations"]))
        assert all(m["group"]["parent"] is None for m in members)  # EVR off: independent rollouts
        assert len({m["sample"]["sample_id"] for m in members}) == 1  # one prompt per group
    html = (out / "report.html").read_text()
    assert '<section id="groups">' in html and "step 0/" in html and "step 1/" in html


def test_rollout_records_carry_evr_branches_and_cca_credit(tiny_path, tmp_path):
    """rollouts.jsonl with EVR and CCA on: each group has num_generations members, branches name a parent inside
    their group (matching the logged branch rate), and every member carries the IoU and tool reward CCA gave it."""
    from agents.report.cli import report_after_run
    from agents.train.run import build_policy, train

    evr = {"enabled": True, "p_base": 1.0, "gamma": 0.0, "min_delta": -1.0}  # every fork opportunity branches
    config = make_config(tiny_path, tmp_path, group=4, batch=4, evr=evr, max_steps=2)
    config.cca.enabled = True
    policy = build_policy(config, device="cpu")
    policy.sampling.logits_hooks = [ZoomGrammar(policy.tokenizer, zooms=1, coordinate_range=(0, 80))]
    trainer = train(config, policy=policy, resume="never")
    records = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 4  # logging_steps=1: both generations
    logged = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    for step, row in enumerate(logged):
        members = [r["group"] for r in records if r["group"]["step"] == step]
        assert [m["index"] for m in members] == [0, 1, 2, 3] and len({m["id"] for m in members}) == 1
        branched = [m for m in members if m["parent"] is not None]
        assert all(0 <= m["parent"] < 4 and m["parent"] != m["index"] and m["fork_turn"] is not None
                   for m in branched)
        assert len(branched) / 4 == pytest.approx(row["medvr/branched"])
        assert all("iou" in m and m["tool_reward"] in (0.0, 0.5, 1.0) for m in members)
    assert any(r["group"]["parent"] is not None for r in records)
    assert trainer.state.global_step == 2

    off = make_config(tiny_path, tmp_path / "off", max_steps=1)
    off.log_rollouts_every = 0
    train(off, resume="never")
    assert not (tmp_path / "off" / "rollouts.jsonl").exists()
    report = report_after_run(tmp_path, progress=False)
    assert report is not None
    html = report.read_text()
    assert '<section id="groups">' in html
    import re

    shown = [json.loads(b) for b in re.findall(r'<script type="[^"]+" id="grp-\d+">(.*?)</script>', html, re.DOTALL)]
    assert len(shown) == 2  # the report's own consensus pays what the trainer paid
    assert all(m["tool_reward"] == m["rec_tool_reward"] for g in shown for m in g["members"])
