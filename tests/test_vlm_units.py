"""Pieces of the VLM policy that need no model: budget decisions, token spans, resize rule, the env's view sizes."""

from __future__ import annotations

import math

import pytest

from tests.helpers import make_env

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agents.vlm.budget import BudgetAction, ImageBudget, LiveImage  # noqa: E402
from agents.vlm.entropy import normalised_entropy, span_mask, token_stats, turn_entropy  # noqa: E402
from medvr_env.protocol import parse_action_text  # noqa: E402
from agents.vlm.families import adapter_class_for, smart_resize  # noqa: E402
from agents.vlm.sampling import SamplingConfig, choose_tokens  # noqa: E402


def live(*tokens):
    return [LiveImage(i, t) for i, t in enumerate(tokens)]


def test_budget_evicts_oldest_crop_first_and_the_original_last():
    b = ImageBudget(max_images=3)
    assert b.next_action(live(10, 10), 10, True) is None
    assert b.next_action(live(10, 10, 10), 10, True) == BudgetAction("evict", 1)
    anyone = ImageBudget(max_images=3, keep_first=False)
    assert anyone.next_action(live(10, 10, 10), 10, True) == BudgetAction("evict", 0)
    assert ImageBudget(max_images=1).next_action(live(10), 10, True) == BudgetAction("evict", 0)


def test_budget_downscales_only_dynamic_resolution_families():
    b = ImageBudget(max_images=None, max_image_tokens=100, policy="downscale", min_tokens_per_image=16)
    assert b.next_action(live(64, 40), 10, True) == BudgetAction("downscale", 1, 16)
    assert b.next_action(live(64, 40), 10, False) == BudgetAction("evict", 1)
    assert b.next_action(live(64, 16), 30, True) == BudgetAction("downscale", 0, 16)  # the original goes last
    assert b.new_image_cap() == 100
    with pytest.raises(ValueError):
        ImageBudget(policy="drop")


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference

    for h, w in [(600, 800), (1536, 2048), (28, 28), (31, 977), (448, 448), (1000, 56)]:
        for max_pixels in (112 * 112, 1280 * 28 * 28):
            assert smart_resize(h, w, 28, 56 * 56, max_pixels) == reference(h, w, 28, 56 * 56, max_pixels)


TOOLS = ("think", "zoom", "crop", "relook", "answer")


def spans_of(text):
    return parse_action_text(text, TOOLS, with_spans=True).spans


def test_protocol_spans_find_the_executed_call():
    text = ('<think>maybe <tool_call>{"name": "zoom", "arguments": {"bbox_2d": [9, 9, 9, 9]}}</tool_call></think>'
            '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [10, 20, 300, 400], "source": 0}}</tool_call>')
    spans = spans_of(text)
    assert text[slice(*spans.argument("box").value)] == "[10, 20, 300, 400]"
    assert [text[slice(*s)] for s in spans.box_items] == ["10", "20", "300", "400"]
    assert text[slice(*spans.arguments)] == '{"bbox_2d": [10, 20, 300, 400], "source": 0}'
    assert text[slice(*spans.argument("view").value)] == "0" and text[slice(*spans.name)] == '"zoom"'
    assert [text[slice(*s)] for s in spans.think] == ['maybe <tool_call>{"name": "zoom", "arguments": '
                                                       '{"bbox_2d": [9, 9, 9, 9]}}</tool_call>']
    answer = "  <think>a</think><answer>yes</answer>"
    assert answer[slice(*spans_of(answer).action)] == "yes" and spans_of(answer).arguments is None


def test_protocol_spans_of_string_arguments_fences_and_aliases():
    """Arguments sent as a JSON string get their box spans too (the old entropy regexes missed them)."""
    text = ('<tool_call>```json\n{"name": "image_zoom_in_tool", "parameters": "{\\"bbox_2d\\": [1.5, 2, 3, 4]}"}'
            '\n```</tool_call>')
    spans = spans_of(text)
    assert [text[slice(*s)] for s in spans.box_items] == ["1.5", "2", "3", "4"]
    # what the parser rejects gets no spans: one grammar, so no tool entropy for it either
    for bad in ['<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [1, 2</tool_call>',
                '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}</tool_call><answer>a</answer>']:
        result = parse_action_text(bad, TOOLS, with_spans=True)
        assert not result.ok and result.spans is None


class CharTokenizer:
    """One token per character (ids are code points): spans map to tokens one to one."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [self.decode(s) for s in seqs]


def test_spans_map_to_tokens():
    text = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [10, 20, 30, 40]}}</tool_call>'
    ids = [ord(c) for c in text]
    entropies = [0.1] * len(ids)
    start = text.index("[10")
    for i in range(start, start + len("[10, 20, 30, 40]")):
        entropies[i] = 0.7
    te = turn_entropy(CharTokenizer(), ids, entropies, spans_of(text))
    assert te.first_coordinate == start + 1  # the "1" of 10, not the bracket
    assert sum(te.box_mask) == len("[10, 20, 30, 40]") and te.tool_entropy == pytest.approx(0.7)
    assert sum(te.argument_mask) == len('{"bbox_2d": [10, 20, 30, 40]}')
    none = turn_entropy(CharTokenizer(), ids, entropies, None)
    assert none.tool_entropy is None and none.first_coordinate is None and not any(none.box_mask)
    assert span_mask([(0, 2), (2, 5), (5, 9)], (3, 6)) == [False, True, True]


def test_entropy_is_normalised_and_matches_the_formula():
    logits = torch.randn(5, 97)
    tokens = torch.randint(0, 97, (5,))
    h, lp = token_stats(logits, tokens, 0.7)
    p = torch.softmax(logits / 0.7, -1)
    assert torch.allclose(h, -(p * p.log()).sum(-1) / math.log(97), atol=1e-6)
    assert torch.allclose(lp, p.log()[torch.arange(5), tokens], atol=1e-6)
    assert normalised_entropy(torch.zeros(3, 50)).allclose(torch.ones(3))
    assert float(normalised_entropy(torch.tensor([[0.0, -1e9, -1e9]]))) == pytest.approx(0.0, abs=1e-6)


def test_choose_tokens_respects_top_k_and_hooks():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]])
    cfg = SamplingConfig(temperature=1.0, top_k=1)
    assert int(choose_tokens(logits, cfg, [None], None)) == 1
    force = lambda rows, x: torch.tensor([[-math.inf, -math.inf, -math.inf, 0.0]])  # noqa: E731
    assert int(choose_tokens(logits, SamplingConfig(temperature=0.0, logits_hooks=[force]), [None], None)) == 3
    assert int(choose_tokens(logits, SamplingConfig(temperature=0.0), [None], None, torch.tensor([1, 2]))) == 0
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)


def test_family_table():
    assert adapter_class_for("qwen2_5_vl").bbox_format == "pixel"
    assert adapter_class_for("qwen2_vl").bbox_format == adapter_class_for("qwen3_vl").bbox_format == "norm1000"
    assert adapter_class_for("smolvlm").bbox_format == adapter_class_for("llava").bbox_format == "norm"
    assert adapter_class_for("some_new_vlm").__name__ == "GenericAdapter"


def test_env_reads_pixel_boxes_on_the_size_the_policy_saw():
    """A VLM processor shows view 0 (800x600) at 112x84: pixel boxes must be read on that size."""
    text = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [28, 21, 84, 63]}}</tool_call>'
    env = make_env(bbox_format="pixel")
    env.reset(options={"index": 0})
    env.step({"text": text, "view_sizes": {"0": [112, 84]}})
    assert env.episode.views[1].box.as_list() == [200, 150, 600, 450]
    env.reset(options={"index": 0})  # without view sizes: the delivered size (backward compatible)
    env.step(text)
    assert env.episode.views[1].box.as_list() == [28, 21, 84, 63]
    env.reset(options={"index": 0})  # junk is an error step with a clear code, not a silently different box
    env.step({"text": text, "view_sizes": {"0": "big", "x": [1, 2]}})
    assert len(env.episode.views) == 1 and env.episode.steps[-1].error is not None
