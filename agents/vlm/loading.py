"""Load any image-text-to-text model and its processor from a local folder or a Hub id.

``AutoModelForImageTextToText`` and ``AutoProcessor`` do the work. When ``AutoProcessor`` cannot be built because
an optional dependency of a part we never use is missing (the *video* processors of Qwen-VL and SmolVLM need
torchvision), the processor is assembled from its image-only parts: ``AutoImageProcessor`` (the PIL backend when
torchvision is absent), ``AutoTokenizer`` and the checkpoint's chat template, inside the family's own processor
class. That gives the same tensors for images and text as the full processor.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .families import FamilyAdapter, adapter_class_for

log = logging.getLogger(__name__)


@dataclass
class LoadedVLM:
    """A model, its processor and the family adapter that goes with them."""

    model: Any
    processor: Any
    adapter: FamilyAdapter
    source: str

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` or, when ``None``, the first CUDA device if there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a GPU that supports it, else float32 (float16 on CPU is slow and inexact)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        short = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        return short.get(dtype) or getattr(torch, dtype)
    except AttributeError as exc:
        raise ValueError(f"unknown dtype {dtype!r}") from exc


def _check_model_source(source: str) -> None:
    """A clear error for a checkpoint path that is not there, before transformers reads it as a Hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model checkpoint: it has no config.json "
                                    "(a folder written by save_pretrained, or a Hub id, is expected)")
        return
    looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"model {source!r} is neither a checkpoint folder nor a Hub id such as "
                                "'Qwen/Qwen2.5-VL-7B-Instruct'")


def load_vlm(
    model: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
    local_files_only: bool | None = None,
    trust_remote_code: bool = False,
    processor_kwargs: dict[str, Any] | None = None,
) -> LoadedVLM:
    """Load ``model`` (a folder or a Hub id) for inference: weights, processor, family adapter.

    Args:
        model: A checkpoint folder (as saved by ``save_pretrained``) or a Hub id already in the local cache.
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        dtype: ``"auto"`` (bfloat16 on GPU, float32 on CPU), a ``torch.dtype`` or its name.
        attn_implementation: Passed to ``from_pretrained`` (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``).
        local_files_only: Default: ``True`` for a folder, else ``HF_HUB_OFFLINE``'s setting.
        trust_remote_code: For checkpoints whose classes live in the repository.
        processor_kwargs: Overrides for the processor, e.g. ``{"max_pixels": 1280 * 28 * 28}``.
    """
    from transformers import AutoModelForImageTextToText

    source = str(model)
    _check_model_source(source)
    if local_files_only is None:
        local_files_only = Path(source).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1"
    dev = pick_device(device)
    kwargs: dict[str, Any] = {"dtype": pick_dtype(dtype, dev), "local_files_only": local_files_only,
                              "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    net = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    net.to(dev).eval()
    processor = load_processor(source, local_files_only=local_files_only, trust_remote_code=trust_remote_code,
                               **(processor_kwargs or {}))
    adapter = adapter_class_for(getattr(net.config, "model_type", ""))(net, processor)
    log.info("loaded %s: %s on %s", source, adapter.describe(), dev)
    return LoadedVLM(net, processor, adapter, source)


def load_processor(source: str | os.PathLike, *, local_files_only: bool = True, trust_remote_code: bool = False,
                   **overrides: Any) -> Any:
    """``AutoProcessor`` for ``source``, or the image-only fallback when a video part cannot be built."""
    from transformers import AutoProcessor

    limits = {k: overrides.pop(k) for k in ("min_pixels", "max_pixels") if k in overrides}
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only,
                                                  trust_remote_code=trust_remote_code, **overrides)
    except (ImportError, ValueError, AttributeError, TypeError) as exc:
        log.info("AutoProcessor failed for %s (%s: %s); building an image-only processor", source,
                 type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        processor = image_only_processor(source, local_files_only=local_files_only,
                                         trust_remote_code=trust_remote_code, **overrides)
    set_pixel_limits(processor, **limits)
    return processor


def set_pixel_limits(processor: Any, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Set a dynamic-resolution image processor's pixel budget (Qwen-VL's ``min_pixels`` / ``max_pixels``)."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return
    for key, edge, value in (("min_pixels", "shortest_edge", min_pixels), ("max_pixels", "longest_edge", max_pixels)):
        if value is None:
            continue
        if getattr(ip, key, None) is not None:
            setattr(ip, key, int(value))
        size = getattr(ip, "size", None)
        if isinstance(size, dict):
            size[edge] = int(value)
        elif size is not None and hasattr(size, edge):
            setattr(size, edge, int(value))


def image_only_processor(source: str | os.PathLike, *, local_files_only: bool = True, trust_remote_code: bool = False,
                         **overrides: Any) -> Any:
    """The family's processor class built from the image processor, tokenizer and chat template only."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    common = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
    image_kwargs = {k: v for k, v in overrides.items() if k not in ("chat_template",)}
    image_processor = AutoImageProcessor.from_pretrained(source, **common, **image_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    settings = _read_json(source, "processor_config.json", common)
    class_name = settings.pop("processor_class", None)
    if class_name is None:
        model_type = AutoConfig.from_pretrained(source, **common).model_type
        class_name = PROCESSOR_MAPPING_NAMES.get(model_type)
    base = getattr(transformers, class_name, None) if class_name else None
    if base is None:
        raise ValueError(f"cannot build a processor for {source}: unknown processor class {class_name!r}")
    chat_template = overrides.get("chat_template") or _read_chat_template(source, common) or getattr(
        tokenizer, "chat_template", None)
    params = inspect.signature(base.__init__).parameters

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: N807
        if "video_processor" in params:
            kwargs["video_processor"] = None
        base.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    # Same class name, so logs and isinstance-by-name checks read as the family's processor.
    cls = type(base.__name__, (base,), {"__init__": __init__, "__module__": __name__,
                                        "__doc__": f"{base.__name__} without its video processor."})
    extra = {k: v for k, v in settings.items() if k in params and k not in ("image_processor", "tokenizer")}
    return cls(image_processor, tokenizer, chat_template=chat_template, **extra)


def _read_json(source: str | os.PathLike, name: str, common: dict[str, Any]) -> dict[str, Any]:
    path = Path(source) / name
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(source), name, local_files_only=common["local_files_only"]))
        except Exception:  # noqa: BLE001 - absent file or no cache: no settings
            return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _read_chat_template(source: str | os.PathLike, common: dict[str, Any]) -> str | None:
    path = Path(source) / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    data = _read_json(source, "chat_template.json", common)
    return data.get("chat_template")


__all__ = ["LoadedVLM", "image_only_processor", "load_processor", "load_vlm", "pick_device", "pick_dtype",
           "set_pixel_limits"]
