"""The VLM policy on tiny random-weight models of real families, loaded like a user's checkpoint.

Random weights almost never write a valid tool call, so most episodes force the model's output with
:class:`agents.testing.ForceText` (a logits hook: the model still runs every forward, and entropies and
log-probabilities come from its own logits). Models are built once per session; torch runs single-threaded here
(tiny matrices gain nothing from threads, and on a shared 2-core runner thread spinning costs 10-40x).
"""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import medvr_env  # noqa: E402,F401
from agents.base import make_agent  # noqa: E402
from agents.runner import run_episodes  # noqa: E402
from agents.testing import ForceText, tiny_vlm_cache  # noqa: E402
from agents.vlm import ImageBudget, PlaceholderMismatch, SamplingConfig, VLMPolicy, load_vlm  # noqa: E402
from medvr_env.boxes import Box, box_from_agent  # noqa: E402
from tests.helpers import make_env  # noqa: E402

FAMILIES = ["qwen2_5_vl", "qwen2_vl", "qwen3_vl", "idefics3", "llava"]
FORMAT = {"qwen2_5_vl": "pixel", "qwen2_vl": "norm1000", "qwen3_vl": "norm1000", "idefics3": "norm", "llava": "norm"}
PROCESSOR = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen2_vl": "Qwen2VLProcessor", "qwen3_vl": "Qwen3VLProcessor",
             "idefics3": "Idefics3Processor", "llava": "LlavaProcessor"}
ANSWER = "<think>Done.</think><answer>yes</answer>"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_vlm_cache(tmp_path_factory.mktemp("tiny_vlms"))


_POLICIES: dict = {}


@pytest.fixture
def policy(tiny):
    """``policy(family, **sampling)``: one loaded model per family, fresh sampling/budget settings per test."""

    def make(family: str, budget: ImageBudget | None = None, cache_reuse: bool = True, **sampling) -> VLMPolicy:
        if family not in _POLICIES:
            _POLICIES[family] = load_vlm(tiny(family), device="cpu")
        sampling.setdefault("max_new_tokens", 64)
        return VLMPolicy(_POLICIES[family], sampling=SamplingConfig(**sampling), budget=budget,
                         cache_reuse=cache_reuse)

    return make


def box_text(fmt: str, shown: tuple[int, int], frac=(0.25, 0.25, 0.75, 0.75)) -> list:
    if fmt == "pixel":
        return [round(f * shown[i % 2]) for i, f in enumerate(frac)]
    if fmt == "norm1000":
        return [round(f * 1000) for f in frac]
    return list(frac)


def call(name: str, **arguments) -> str:
    return f"<think>Look closer.</think><tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def view0_shown(pol: VLMPolicy, seed: int) -> tuple[tuple[int, int], "object"]:
    env = make_env()
    env.reset(seed=seed)
    return pol.adapter.prepare_image(env.episode.render_view(0)).shown_size, env


def direct_stats(logits: torch.Tensor, temperature: float = 1.0):
    """Normalised entropy and log-softmax computed here, independently of agents.vlm.entropy."""
    p = torch.softmax(logits.double() / temperature, -1)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1) / math.log(logits.shape[-1])
    return h, torch.log(p)


def check_against_direct_forward(pol: VLMPolicy, rollout) -> None:
    """Every recorded per-token entropy and log-prob equals one computed from a fresh forward's logits."""
    for seg in rollout.segments:
        logits = pol.score(seg, return_logits=True)["logits"]
        h, logp = direct_stats(logits)
        idx = [i for i, g in enumerate(seg.generated) if g]
        assert idx, "a segment with no generated tokens"
        ids = torch.tensor(seg.token_ids)
        want_h = h[[i - 1 for i in idx]]
        want_lp = logp[[i - 1 for i in idx], ids[idx]]
        got_h = torch.tensor([seg.entropies[i] for i in idx], dtype=torch.float64)
        got_lp = torch.tensor([seg.logprobs[i] for i in idx], dtype=torch.float64)
        assert torch.allclose(got_h, want_h, atol=1e-4), float((got_h - want_h).abs().max())
        assert torch.allclose(got_lp, want_lp, atol=1e-3), float((got_lp - want_lp).abs().max())
        # placeholders in the exact model input equal the images passed with it
        n_tokens = int((ids == pol.adapter.image_token_id).sum())
        assert len(seg.images) == len(seg.image_views)
        assert n_tokens == sum(pol.adapter.image_tokens(im) for im in seg.images)


# ---------------------------------------------------------------------- loading
@pytest.mark.parametrize("family", FAMILIES)
def test_loads_like_a_user_checkpoint(tiny, family):
    vlm = load_vlm(tiny(family), device="cpu")
    assert vlm.adapter.bbox_format == FORMAT[family]
    assert type(vlm.processor).__name__ == PROCESSOR[family]  # AutoProcessor, or the image-only fallback
    assert vlm.processor.chat_template and vlm.model.training is False
    assert vlm.adapter.image_token_id in vlm.adapter.suppressed_ids()  # never sampled: it would desync images


def test_the_policy_never_samples_an_image_placeholder(policy):
    pol = policy("idefics3", temperature=1.0, max_new_tokens=6, max_turns=1, seed=0)
    image_id = pol.adapter.image_token_id
    pol.sampling.logits_hooks = [lambda rows, x: x.index_fill(1, torch.tensor([image_id]), 50.0)]
    (r,) = pol.rollout([make_env()], seeds=[0])
    assert image_id not in r.turns[0].token_ids


# ---------------------------------------------------------------------- episodes
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_episodes_with_tool_calls(policy, family):
    """Three envs in one batch end at turns 1, 2 and 3; zoom and crop calls are parsed, executed where the model
    meant them, their views come back as images, and the entropy channel carries the model's own entropies."""
    pol = policy(family, temperature=1.0, seed=0)
    fmt = pol.bbox_format
    shown, probe = view0_shown(pol, seed=2)
    zoom = call("zoom", bbox_2d=box_text(fmt, shown))
    crop = call("crop", bbox_2d=box_text(fmt, (100, 100), (0.1, 0.1, 0.6, 0.6)) if fmt != "pixel" else [5, 5, 40, 40],
                source=1)
    scripts = {0: [ANSWER], 1: [zoom, ANSWER], 2: [zoom, crop, ANSWER]}
    pol.sampling.logits_hooks = [ForceText(pol.tokenizer, scripts)]
    envs = [make_env(max_steps=6) for _ in range(3)]
    rollouts = pol.rollout(envs, seeds=[0, 1, 2])

    assert [len(r.turns) for r in rollouts] == [1, 2, 3]
    for r, env in zip(rollouts, envs):
        assert env.bbox_format == fmt
        assert r.stop_reason == "answered" and r.episode.stop_reason == "answered"
        assert all(s.error is None for s in r.episode.steps), [s.error for s in r.episode.steps]
        assert [t.text for t in r.turns] == scripts[r.key]
        for turn, step in zip(r.turns, r.episode.steps):
            assert step.entropy_source == "policy" and step.entropy == pytest.approx(turn.entropy)
            assert 0.0 <= turn.entropy <= 1.0 and all(0.0 <= h <= 1.0 for h in turn.entropies)
            assert len(step.token_entropies) == len(turn.token_ids)
            if "tool_call" in turn.text:
                coords = [h for h, m in zip(turn.entropies, turn.box_mask) if m]
                digits = pol.tokenizer.decode([t for t, m in zip(turn.token_ids, turn.box_mask) if m])
                assert coords and step.tool_entropy == pytest.approx(sum(coords) / len(coords))
                assert digits.strip().startswith("[") and any(c.isdigit() for c in digits)
            else:
                assert step.tool_entropy is None and not any(turn.box_mask)
        check_against_direct_forward(pol, r)

    # the zoom landed where the model meant it, in its own convention, on the image it was shown
    r2 = rollouts[2]
    zoomed = r2.episode.views[1]
    expected = box_from_agent(box_text(fmt, shown), view_box=Box.full(*probe.episode.image_size),
                              view_size=shown, bbox_format=fmt, image_size=probe.episode.image_size)
    assert zoomed.box == expected and zoomed.tool == "zoom"
    w, h = r2.episode.image_size
    assert abs(zoomed.box.x1 - w / 4) <= 0.03 * w and abs(zoomed.box.x2 - 3 * w / 4) <= 0.03 * w
    # the crop was taken from view 1 (a crop of a crop) and both came back as images
    assert r2.episode.views[2].parent == 1 and r2.episode.views[2].tool == "crop"
    assert r2.images_per_turn == [[0], [0, 1], [0, 1, 2]]
    assert r2.segments[0].image_views == [0, 1, 2]
    shown_crop = np.asarray(r2.segments[0].images[1])
    view = r2.episode.render_view(1)
    assert shown_crop.shape[2] == 3 and shown_crop.mean() == pytest.approx(view.mean(), abs=12)


def test_kv_cache_reuse_equals_reencoding(policy):
    """Keeping the cache between turns gives the same logits as re-encoding the conversation every turn."""
    results = {}
    for reuse in (True, False):
        pol = policy("qwen2_5_vl", cache_reuse=reuse, temperature=1.0, seed=0)
        zoom = call("zoom", bbox_2d=[10, 10, 60, 50])
        pol.sampling.logits_hooks = [ForceText(pol.tokenizer, {0: [zoom, zoom, ANSWER], 1: [zoom, ANSWER]})]
        results[reuse] = (pol.rollout([make_env(), make_env()], seeds=[3, 4]), dict(pol.last_stats))
    (reused, s_reuse), (encoded, s_encode) = results[True], results[False]
    for a, b in zip(reused, encoded):
        for ta, tb in zip(a.turns, b.turns):
            assert ta.token_ids == tb.token_ids
            assert np.allclose(ta.logprobs, tb.logprobs, atol=1e-4)
            assert np.allclose(ta.entropies, tb.entropies, atol=1e-5)
    assert s_encode["prefill_tokens"] > 1.5 * s_reuse["prefill_tokens"]


def test_greedy_decoding_is_deterministic(policy):
    pol = policy("qwen2_vl", temperature=0.0, max_new_tokens=12, max_turns=2)
    runs = [pol.rollout([make_env(), make_env()], seeds=[0, 1]) for _ in range(2)]
    assert [[t.token_ids for t in r.turns] for r in runs[0]] == [[t.token_ids for t in r.turns] for r in runs[1]]
    for r in runs[0]:
        for t in r.turns:  # greedy: every token is the argmax, so the most likely one
            assert all(lp <= 0 for lp in t.logprobs)
    seeded = [policy("qwen2_vl", temperature=1.0, max_new_tokens=12, max_turns=1, seed=7).rollout(
        [make_env()], seeds=[0]) for _ in range(2)]
    assert seeded[0][0].turns[0].token_ids == seeded[1][0].turns[0].token_ids


def test_sampling_controls(policy):
    # top-p that keeps only the most likely token is greedy
    greedy = policy("llava", temperature=0.0, max_new_tokens=10, max_turns=1).rollout([make_env()], seeds=[0])
    nucleus = policy("llava", temperature=1.0, top_p=1e-6, max_new_tokens=10, max_turns=1).rollout([make_env()],
                                                                                                   seeds=[0])
    assert greedy[0].turns[0].token_ids == nucleus[0].turns[0].token_ids
    # max new tokens per turn and max turns per episode
    (r,) = policy("idefics3", temperature=1.0, max_new_tokens=7, max_turns=2, seed=1,
                  stop_strings=()).rollout([make_env(max_steps=6)], seeds=[0])
    assert len(r.turns) <= 2 and all(len(t.token_ids) <= 7 for t in r.turns)
    if r.episode.stop_reason == "":
        assert r.stop_reason == "max_turns" and len(r.turns) == 2


def test_image_budget_evicts_old_crops(policy):
    pol = policy("qwen2_vl", budget=ImageBudget(max_images=2), temperature=1.0, seed=0)
    zoom = call("zoom", bbox_2d=[100, 100, 700, 700])
    pol.sampling.logits_hooks = [ForceText(pol.tokenizer, {0: [zoom, zoom, zoom, ANSWER]})]
    (r,) = pol.rollout([make_env(max_steps=6)], seeds=[1])
    assert r.stop_reason == "answered" and r.evictions == 2 and r.rebuilds == 2
    assert all(len(views) <= 2 for views in r.images_per_turn)
    assert r.images_per_turn == [[0], [0, 1], [0, 2], [0, 3]]  # the original is kept, older crops go
    assert len(r.segments) == 3
    text = pol.tokenizer.decode(r.segments[-1].token_ids)
    assert "[view 1: image removed" in text and "[view 2: image removed" in text
    # every turn is trained in exactly one segment
    trained = sorted(t for seg in r.segments for t, _, _ in seg.turn_spans)
    assert trained == [0, 1, 2, 3]
    check_against_direct_forward(pol, r)


def test_image_budget_downscales_before_evicting(policy):
    pol = policy("qwen2_5_vl", budget=ImageBudget(max_images=8, max_image_tokens=24, policy="downscale",
                                                  min_tokens_per_image=4), temperature=1.0, seed=0)
    zoom = call("zoom", bbox_2d=[5, 5, 60, 60])
    pol.sampling.logits_hooks = [ForceText(pol.tokenizer, {0: [zoom, zoom, ANSWER]})]
    (r,) = pol.rollout([make_env(max_steps=6)], seeds=[2])
    assert r.downscales >= 1 and r.stop_reason == "answered"
    for seg in r.segments:
        assert sum(pol.adapter.image_tokens(im) for im in seg.images) <= 24
    check_against_direct_forward(pol, r)
    # the model's pixel boxes are read on the size it saw each view at, also after downscaling
    last = r.turns[-1]
    assert set(last.shown_sizes) == {0, 1, 2}


def test_placeholder_mismatch_is_caught(policy):
    pol = policy("qwen2_5_vl")
    env = make_env()
    obs, info = env.reset(seed=0)
    conv = pol.start(env, obs, info)
    conv.check()
    image_id = pol.adapter.image_token_id
    first = conv.ids.index(image_id)
    short = conv.ids[:first] + conv.ids[first + 3:]  # three placeholders fewer than the image needs
    with pytest.raises(PlaceholderMismatch):
        pol.adapter.check_placeholders(short, 1, conv.parts[0].vision, [conv.slots[0].prepared.tokens])
    with pytest.raises(PlaceholderMismatch):  # placeholders without their image
        pol.adapter.check_placeholders(conv.ids, 0, {}, [])
    conv.parts[0].images.append(conv.parts[0].images[0])
    with pytest.raises(PlaceholderMismatch):
        conv.check()


def test_trainer_data(policy):
    pol = policy("idefics3", temperature=1.0, seed=0)
    pol.sampling.logits_hooks = [ForceText(pol.tokenizer, {0: [call("zoom", bbox_2d=[0.2, 0.2, 0.8, 0.8]), ANSWER]})]
    (r,) = pol.rollout([make_env()], seeds=[0])
    (seg,) = r.segments
    gen = [i for i, g in enumerate(seg.generated) if g]
    assert len(gen) == sum(len(t.token_ids) for t in r.turns)
    assert [seg.token_ids[i] for i in gen] == [tok for t in r.turns for tok in t.token_ids]
    assert all(math.isnan(seg.logprobs[i]) for i, g in enumerate(seg.generated) if not g)
    assert [(t, e - s) for t, s, e in seg.turn_spans] == [(t.turn, len(t.token_ids)) for t in r.turns]
    assert r.turns[1].context_tokens > r.turns[0].context_tokens and r.images_per_turn == [[0], [0, 1]]
    json.dumps(r.to_dict())  # JSON-friendly
    inputs = pol.model_inputs(seg)
    assert inputs["input_ids"].shape[1] == len(seg)


# ---------------------------------------------------------------------- the Agent interface
def test_vlm_agent_runs_medvr_episodes(tiny):
    """`medvr run --agent vlm --model PATH` builds the agent with make_agent("vlm", model=PATH)."""
    env = gym.make("MedVR-VQA-Text-v0", dataset_kwargs={"num_samples": 6}, max_steps=3)
    agent = make_agent("vlm", model=str(tiny("qwen2_5_vl")), max_new_tokens=10, device="cpu")
    episodes = []
    summary = run_episodes(env, agent, 2, seed=0, progress=False, on_episode=episodes.append)
    assert summary.episodes == 2 and env.unwrapped.bbox_format == "pixel"
    assert all(s.entropy_source == "policy" and 0 <= s.entropy <= 1 for e in episodes for s in e.steps)
    rollout = agent.last_rollout  # the episode in progress (the runner does not tell agents an episode ended)
    assert len(agent.rollouts) == 1 and [t.text for t in rollout.turns] == [s.raw for s in episodes[1].steps]
    assert [t.text for t in agent.rollouts[0].turns] == [s.raw for s in episodes[0].steps]


def test_medvr_run_with_a_local_checkpoint(tiny, tmp_path, capsys):
    from agents.cli import main

    code = main(["run", "--agent", "vlm", "--model", str(tiny("qwen2_vl")), "--env", "MedVR-VQA-Text-v0",
                 "--episodes", "1", "--no-progress", "--out", str(tmp_path),
                 "--env-kwarg", "max_steps=2", "--env-kwarg", 'dataset_kwargs={"num_samples": 4}'])
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    record = json.loads((run_dir / "trajectories.jsonl").read_text().splitlines()[0])
    assert record["steps"] and all(s["entropy_source"] == "policy" for s in record["steps"])
    assert "vlm on MedVR-VQA-Text-v0" in capsys.readouterr().out


def test_medvr_eval_with_a_local_checkpoint_and_agent_kwargs(tiny, tmp_path, capsys):
    from agents.cli import main

    code = main(["eval", "--agent", "vlm", "--model", str(tiny("qwen2_5_vl")), "--env", "MedVR-VQA-v0",
                 "--limit", "2", "--no-progress", "--out", str(tmp_path), "--agent-kwarg", "max_new_tokens=6",
                 "--env-kwarg", "max_steps=2", "--env-kwarg", "num_samples=4"])
    assert code == 0
    results = json.loads(next(tmp_path.glob("eval_*/results.json")).read_text())["results"][0]
    assert results["agent"] == "vlm" and results["episodes"] == 2
    lines = next(tmp_path.glob("eval_*/trajectories/*.jsonl")).read_text().splitlines()
    steps = [s for line in lines for s in json.loads(line)["steps"]]
    assert steps and all(len(s["raw"]) <= 200 for s in steps)  # 6 new tokens per turn at most
    assert "| vlm |" in capsys.readouterr().out


def test_a_model_path_that_is_not_a_checkpoint_is_a_clear_cli_error(tmp_path, capsys):
    from agents.cli import main

    for model, message in [(tmp_path / "absent", "neither a checkpoint folder nor a Hub id"),
                           (tmp_path, "has no config.json")]:
        code = main(["eval", "--agent", "vlm", "--model", str(model), "--env", "MedVR-VQA-v0", "--limit", "1",
                     "--no-progress", "--out", str(tmp_path / "out")])
        assert code == 2 and message in capsys.readouterr().err
