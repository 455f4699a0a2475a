"""Tiny random-weight vision-language models of the real Hugging Face classes, built offline.

No pretrained weights can be downloaded in CI, so the VLM policy is tested on models built from a config: real
``transformers`` model classes (Qwen2.5-VL, Qwen2-VL, Qwen3-VL, Idefics3, SmolVLM, LLaVA) with a hidden size of 32-64,
one or two layers, tiny vision towers and a byte-level BPE tokenizer trained locally in about a second. Each is saved
to a folder laid out like a real checkpoint (``config.json``, ``model.safetensors``, tokenizer files, image processor
config, ``processor_config.json``, ``chat_template.jinja``), so tests load it back through exactly the code path a
user's checkpoint takes (:func:`agents.vlm.loading.load_vlm`).

Works without torchvision: processors are assembled from their image-only parts (the PIL image processors), which
is also what :mod:`agents.vlm.loading` does when ``AutoProcessor`` cannot build a video processor.

    from agents.testing import build_tiny_vlm
    path = build_tiny_vlm("qwen2_5_vl", "/tmp/tiny-qwen25")   # then: medvr run --agent vlm --model /tmp/tiny-qwen25
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "idefics3", "smolvlm", "llava")

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
IDEFICS_SPECIAL = ["<|begin_of_text|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>",
                   "<row_1_col_1>", "<row_1_col_2>", "<row_2_col_1>", "<row_2_col_2>", "<|finetune_right_pad_id|>"]
LLAVA_SPECIAL = ["<s>", "</s>", "<unk>", "<pad>"]

# Chat templates: the Qwen2-VL / Qwen2.5-VL template as released; SmolVLM's; a LLaVA-1.5 style one.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<image>\n' }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ ' ' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: the MedVR prompts and protocol, with numbers in every format."""
    from medvr_env.protocol import render_system_prompt, render_tool_call
    from medvr_env.tools import DEFAULT_TOOLS, resolve_tool

    tools = [resolve_tool(t) for t in DEFAULT_TOOLS]
    texts = [render_system_prompt(tools, fmt) for fmt in ("pixel", "norm", "norm1000")]
    for i in range(40):
        a, b = (i * 37) % 900, (i * 53) % 900
        texts += [
            render_tool_call("zoom", {"bbox_2d": [a, b, a + 100, b + 80]}, think=f"Look at region {i}."),
            render_tool_call("crop", {"bbox_2d": [a / 1000, b / 1000, (a + 90) / 1000, (b + 70) / 1000],
                                      "source": i % 3}),
            render_tool_call("relook", {"view": i % 4}),
            render_tool_call("answer", {"text": ["yes", "no", "A", "B", "liver", "2"][i % 6]},
                             think="The finding is clear."),
        ]
    texts += [
        "Is there a nodule in the left lung? Which organ is shown? How many lesions are there? yes no",
        "Tool result: Zoomed into view 1 of view 0: view 2 (448x448).",
        "Error (bad_json): the tool call is not valid JSON",
        "USER: ASSISTANT: System: User: Assistant: <tool_response> </tool_response> pixels view image",
    ]
    return texts


@lru_cache(maxsize=1)
def _bpe_json(vocab_size: int = 600) -> str:
    """A byte-level BPE trained on :func:`_corpus`, with every family's special tokens (serialised; ~1 s, once)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(QWEN_SPECIAL + IDEFICS_SPECIAL + LLAVA_SPECIAL))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(_corpus() * 3, trainer)
    return raw.to_str()


def build_tokenizer(family: str):
    """A ``PreTrainedTokenizerFast`` for ``family`` with its special tokens and chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_str(_bpe_json())
    if family.startswith("qwen"):
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      additional_special_tokens=QWEN_SPECIAL[1:])
        tok.chat_template = QWEN_CHAT_TEMPLATE
    elif family in ("idefics3", "smolvlm"):
        tok = PreTrainedTokenizerFast(
            tokenizer_object=raw, bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>",
            pad_token="<|finetune_right_pad_id|>", additional_special_tokens=IDEFICS_SPECIAL[1:])
        tok.chat_template = SMOLVLM_CHAT_TEMPLATE
    elif family == "llava":
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                      pad_token="<pad>", additional_special_tokens=["<image>"])
        tok.chat_template = LLAVA_CHAT_TEMPLATE
    else:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    return tok


def _ids(tok, names: list[str]) -> dict[str, int]:
    return {n: tok.convert_tokens_to_ids(n) for n in names}


def _llama_text(tok, hidden: int, layers: int, eos: str, pad: str, bos: str | None) -> dict[str, Any]:
    return dict(model_type="llama", vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=tok.convert_tokens_to_ids(bos) if bos else None,
                eos_token_id=tok.convert_tokens_to_ids(eos), pad_token_id=tok.convert_tokens_to_ids(pad))


def _qwen_text(tok, hidden: int, layers: int, **extra: Any) -> dict[str, Any]:
    ids = _ids(tok, QWEN_SPECIAL)
    head_dim = hidden // 4
    section = [head_dim // 2 - 2 * (head_dim // 6), head_dim // 6, head_dim // 6]  # sums to head_dim / 2
    return dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": section, **extra},
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def _qwen_vision_ids(tok) -> dict[str, int]:
    ids = _ids(tok, QWEN_SPECIAL)
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def _build(family: str, hidden: int, layers: int, image_side: int):
    """(model, tokenizer, image_processor, processor_class_name, processor_kwargs) for ``family``."""
    import transformers as tf

    tok = build_tokenizer(family)
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        patch = 16 if family == "qwen3_vl" else 14
        factor = patch * 2
        ip = tf.Qwen2VLImageProcessorPil(min_pixels=(2 * factor) ** 2, max_pixels=(image_side // factor * factor) ** 2,
                                         patch_size=patch, merge_size=2, temporal_patch_size=2)
        if family == "qwen2_vl":
            cfg = tf.Qwen2VLConfig(
                text_config=_qwen_text(tok, hidden, layers),
                vision_config=dict(depth=layers, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2,
                                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
                **_qwen_vision_ids(tok))
            model = tf.Qwen2VLForConditionalGeneration(cfg)
            proc = "Qwen2VLProcessor"
        elif family == "qwen2_5_vl":
            cfg = tf.Qwen2_5_VLConfig(
                text_config=_qwen_text(tok, hidden, layers),
                vision_config=dict(depth=layers, hidden_size=32, out_hidden_size=hidden, intermediate_size=64,
                                   num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                                   window_size=112, fullatt_block_indexes=[layers - 1]),
                **_qwen_vision_ids(tok))
            model = tf.Qwen2_5_VLForConditionalGeneration(cfg)
            proc = "Qwen2_5_VLProcessor"
        else:
            text = _qwen_text(tok, hidden, layers, mrope_interleaved=True)
            text["head_dim"] = hidden // 4
            cfg = tf.Qwen3VLConfig(
                text_config=text,
                vision_config=dict(depth=layers, hidden_size=32, intermediate_size=64, num_heads=2,
                                   out_hidden_size=hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                                   num_position_embeddings=64, deepstack_visual_indexes=[0]),
                **_qwen_vision_ids(tok))
            model = tf.Qwen3VLForConditionalGeneration(cfg)
            proc = "Qwen3VLProcessor"
        return model, tok, ip, proc, {}
    if family in ("idefics3", "smolvlm"):
        ids = _ids(tok, IDEFICS_SPECIAL)
        tok.image_token, tok.fake_image_token = "<image>", "<fake_token_around_image>"
        tok.global_image_token = "<global-img>"
        ip = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 64},
                                          max_image_size={"longest_edge": 64})
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                      patch_size=16)
        text = _llama_text(tok, hidden, layers, "<end_of_utterance>", "<|finetune_right_pad_id|>", "<|begin_of_text|>")
        if family == "idefics3":
            cfg = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                                    image_token_id=ids["<image>"])
            model, proc = tf.Idefics3ForConditionalGeneration(cfg), "Idefics3Processor"
        else:
            cfg = tf.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2,
                                   image_token_id=ids["<image>"])
            model, proc = tf.SmolVLMForConditionalGeneration(cfg), "SmolVLMProcessor"
        return model, tok, ip, proc, {"image_seq_len": 4}
    if family == "llava":
        image_id = tok.convert_tokens_to_ids("<image>")
        ip = tf.CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
        cfg = tf.LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16,
                               projection_dim=32),
            text_config=_llama_text(tok, hidden, layers, "</s>", "<pad>", "<s>"),
            image_token_id=image_id, vision_feature_layer=-1, vision_feature_select_strategy="default")
        model = tf.LlavaForConditionalGeneration(cfg)
        return model, tok, ip, "LlavaProcessor", {"patch_size": 16, "vision_feature_select_strategy": "default",
                                                  "num_additional_image_tokens": 1, "image_token": "<image>"}
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def build_tiny_vlm(
    family: str,
    path: str | os.PathLike,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_side: int = 112,
    seed: int = 0,
) -> Path:
    """Build a random-weight ``family`` model and save it to ``path`` like a real checkpoint; returns ``path``.

    Args:
        family: One of :data:`FAMILIES`.
        path: Output folder (created).
        hidden_size: Text hidden size (the vision tower is smaller still).
        num_layers: Text and vision layers.
        image_side: Qwen families: longest side of the processor's pixel budget (``max_pixels = side**2``).
        seed: Weight seed; the same seed gives the same weights.
    """
    import torch

    torch.manual_seed(seed)
    model, tok, ip, processor_class, processor_kwargs = _build(family, hidden_size, num_layers, image_side)
    model.eval()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = model.config.get_text_config().eos_token_id
        model.generation_config.pad_token_id = model.config.get_text_config().pad_token_id
        model.generation_config.bos_token_id = model.config.get_text_config().bos_token_id
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    ip.save_pretrained(path)
    (path / "chat_template.jinja").write_text(tok.chat_template)
    (path / "processor_config.json").write_text(
        json.dumps({"processor_class": processor_class, **processor_kwargs}, indent=2)
    )
    return path


def tiny_vlm_cache(root: str | os.PathLike) -> Callable[[str], Path]:
    """A builder that makes each family once under ``root`` and returns its path (for session fixtures)."""
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = build_tiny_vlm(family, Path(root) / family)
        return made[family]

    return get


__all__ = ["FAMILIES", "build_tiny_vlm", "build_tokenizer", "tiny_vlm_cache"]
