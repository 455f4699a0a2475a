"""Build a new (untrained) MedVR tiny VLM checkpoint: tokenizer, config, real encoder weights, random decoder.

``size="bundled"`` is the bundled agent's shape (Qwen2 decoder, hidden 256, 2 layers); ``size="test"`` is a
hidden-64, 2-layer decoder for tests (built in a few seconds, same encoder). The encoder always carries the
pretrained ImageNet weights of EfficientNet-Lite0 (local, loaded in well under a second).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .configuration import MedVRTinyConfig
from .modeling import MedVRTinyForConditionalGeneration
from .processing import IMAGE_TOKEN, VISION_END, VISION_START, MedVRTinyImageProcessor, MedVRTinyProcessor

SIZES: dict[str, dict[str, Any]] = {
    "bundled": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2),
    "test": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


def cache_root() -> Path:
    """``$MEDVR_CACHE`` or ``~/.cache/medvr``."""
    return Path(os.environ.get("MEDVR_CACHE") or Path.home() / ".cache" / "medvr").expanduser()


def bundled_path() -> Path:
    """Where ``medvr sft --bundled`` puts the bundled agent's checkpoint (read by ``medvr run --agent tiny``)."""
    return cache_root() / "tinyvlm" / "model"


def build_model(path: str | os.PathLike | None = None, *, size: str = "bundled", tokenizer: Any = None,
                vqa_rad_root: str | None = None, seed: int = 0, image_size: int = 224,
                **text_overrides: Any) -> Path | tuple[MedVRTinyForConditionalGeneration, MedVRTinyProcessor]:
    """A new model and processor; saved to ``path`` (returned) or, with ``path=None``, returned as objects.

    Args:
        size: ``"bundled"`` or ``"test"`` (see :data:`SIZES`); ``text_overrides`` change single fields.
        tokenizer: Reuse a tokenizer; default: train one (:func:`agents.tinyvlm.tokenizer.build_tokenizer`).
        vqa_rad_root: Where VQA-RAD is, for the tokenizer's training text (default: the usual search).
        seed: Seed of the decoder's and projector's initial weights.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    if tokenizer is None:
        from .tokenizer import build_tokenizer

        tokenizer = build_tokenizer(vqa_rad_root, procedural_samples=2000 if size == "bundled" else 200)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, VISION_START, VISION_END)}
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), max_position_embeddings=4096, rope_theta=10000.0,
                bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=False, attention_dropout=0.0, **{**SIZES[size], **text_overrides})
    config = MedVRTinyConfig(text_config=text, image_size=image_size, image_token_id=ids[IMAGE_TOKEN],
                             vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = MedVRTinyForConditionalGeneration(config)
    model.load_pretrained_vision()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    image_processor = MedVRTinyImageProcessor(size={"height": image_size, "width": image_size})
    processor = MedVRTinyProcessor(image_processor, tokenizer, image_seq_len=config.image_seq_len)
    model.eval()
    if path is None:
        return model, processor
    return save_checkpoint(model, processor, path)


def save_checkpoint(model: MedVRTinyForConditionalGeneration, processor: MedVRTinyProcessor,
                    path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """``save_pretrained`` of model and processor into ``path``, atomically (a temporary folder, then a rename).

    ``extra`` maps file names to objects saved with ``torch.save`` in the same folder (a trainer's state).
    """
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        processor.image_processor.save_pretrained(tmp)  # preprocessor_config.json, for AutoImageProcessor alone
        for name, obj in (extra or {}).items():
            torch.save(obj, tmp / name)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


__all__ = ["SIZES", "build_model", "bundled_path", "cache_root", "save_checkpoint"]
