"""Per-family adapters: where vision-language model families differ, and nowhere else.

An adapter answers, for one model family:

- **which box convention the model speaks** (:attr:`FamilyAdapter.bbox_format`), so the env reads its boxes
  where it meant them. Qwen2.5-VL was trained on absolute pixels of the image *after* its processor resized it
  (``"pixel"``); Qwen2-VL and Qwen3-VL on integers 0-1000 of the image (``"norm1000"``); SmolVLM/Idefics3 and
  LLaVA have no native grounding format and are declared ``"norm"`` (0-1 fractions), the format LLaVA-1.5's
  grounding data used. Wrong conventions are the silent bug peers suffer from (DeepEyes#141);
- **how an env view becomes the image the model sees** (:meth:`prepare_image`), such that the box convention stays
  exact: Qwen views are resized here to the processor's own grid (so the processor does not resize again and
  ``"pixel"`` boxes are on a size we know and report to the env); LLaVA views are resized to the square the CLIP
  processor would otherwise centre-crop (a crop would hide the view's edges and shift relative boxes);
- **how many placeholder tokens an image costs** (:meth:`image_tokens`), for the image budget;
- **how positions are numbered** (multimodal RoPE for the Qwen families, plain 1-D positions otherwise) and how
  vision inputs of several conversations are put in one forward pass (:meth:`collate`).

Unknown families get :class:`GenericAdapter` (``"norm"`` boxes, 1-D positions, token counts measured by running the
processor); pass ``bbox_format=`` to :class:`~agents.vlm.policy.VLMPolicy` when a checkpoint was trained otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image


class PlaceholderMismatch(RuntimeError):
    """The image placeholders in a prompt do not match the images passed with it."""


@dataclass
class PreparedImage:
    """An env view as the model sees it."""

    image: Image.Image
    shown_size: tuple[int, int]  # (width, height) of ``image``: the frame of "pixel" boxes
    tokens: int  # placeholder tokens it expands to
    source_size: tuple[int, int]  # (width, height) of the env view it came from


@dataclass
class Processed:
    """One prompt piece through the processor: token ids and the vision tensors of its images."""

    ids: list[int]
    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    num_images: int = 0


def _size_value(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


class FamilyAdapter:
    """Base adapter; subclasses override what their family does differently."""

    name: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    bbox_format: ClassVar[str] = "norm"
    mrope: ClassVar[bool] = False
    can_downscale: ClassVar[bool] = False

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_processor = getattr(processor, "image_processor", None)
        self.image_token_id = self._find_image_token_id()
        self._token_count_cache: dict[tuple[int, int], int] = {}

    # ------------------------------------------------------------------ tokens
    def _find_image_token_id(self) -> int:
        cfg = self.model.config
        for owner in (cfg, self.processor):
            for key in ("image_token_id", "image_token_index"):
                value = getattr(owner, key, None)
                if isinstance(value, int) and value >= 0:
                    return value
        token = getattr(self.processor, "image_token", None) or "<image>"
        value = self.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"cannot find the image placeholder token of {type(self.model).__name__}")
        return value

    def prompt_style(self, style: Any) -> Any:
        """The :class:`~agents.vlm.prompts.PromptStyle` this family's checkpoints were trained with, given the
        caller's; the default keeps it (a family that was trained on another rendering overrides this)."""
        return style

    def suppressed_ids(self) -> list[int]:
        """Tokens the policy must never sample: image/video placeholders and the markers around them.

        A sampled placeholder would desynchronise image tokens and image features on the next forward.
        """
        ids = {self.image_token_id}
        cfg = self.model.config
        for key in ("video_token_id", "vision_start_token_id", "vision_end_token_id", "image_start_token_id",
                    "image_end_token_id", "boi_token_id", "eoi_token_id", "video_token_index"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value >= 0:
                ids.add(value)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for attr in ("image_token", "video_token", "fake_image_token", "global_image_token", "boi_token", "eoi_token"):
            token = getattr(self.processor, attr, None)
            if isinstance(token, str) and token:
                value = self.tokenizer.convert_tokens_to_ids(token)
                if isinstance(value, int) and value >= 0 and value != unk:
                    ids.add(value)
        return sorted(ids)

    @property
    def image_placeholder(self) -> str:
        """The text the chat template writes for one image (before the processor expands it)."""
        return getattr(self.processor, "image_token", None) or "<image>"

    # ------------------------------------------------------------------ images
    def prepare_image(self, pixels: np.ndarray, max_tokens: int | None = None) -> PreparedImage:
        """Turn an env view (H, W, 3 uint8) into what the model is shown; ``max_tokens`` caps its cost if possible."""
        image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
        return PreparedImage(image, image.size, self.image_tokens(image), image.size)

    def image_tokens(self, image: Image.Image) -> int:
        """Placeholder tokens ``image`` expands to (measured once per size by running the processor)."""
        key = image.size
        if key not in self._token_count_cache:
            processed = self.processor(
                text=[self.image_placeholder], images=[image], return_tensors="pt", add_special_tokens=False
            )
            self._token_count_cache[key] = int((processed["input_ids"][0] == self.image_token_id).sum())
        return self._token_count_cache[key]

    # --------------------------------------------------------------- processing
    def process(self, text: str, images: Sequence[Image.Image], expected_tokens: Sequence[int] = ()) -> Processed:
        """Tokenise one prompt piece and process its images; checks placeholders against the images."""
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt", "add_special_tokens": False}
        if images:
            kwargs["images"] = [list(images)] if self.nested_images else list(images)
        out = self.processor(**kwargs)
        ids = out["input_ids"][0].tolist()
        vision = {k: v for k, v in out.items() if k in self.vision_keys and v is not None}
        processed = Processed(ids, vision if images else {}, len(images))
        self.check_placeholders(processed.ids, len(images), processed.vision, expected_tokens)
        return processed

    def image_inputs(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Vision inputs for prepared images (in placeholder order), as the processor makes them."""
        if not images:
            return {}
        batch = [list(images)] if self.nested_images else list(images)
        out = self.image_processor(images=batch, return_tensors="pt")
        return {k: v for k, v in out.items() if k in self.vision_keys and v is not None}

    nested_images: ClassVar[bool] = False
    vision_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_sizes")

    def check_placeholders(
        self, ids: Sequence[int], num_images: int, vision: dict[str, torch.Tensor], expected_tokens: Sequence[int] = ()
    ) -> None:
        """Raise :class:`PlaceholderMismatch` unless the placeholders in ``ids`` match the images exactly."""
        self.check_counts(ids, num_images, self.processed_images(ids, vision), expected_tokens)

    def check_counts(
        self, ids: Sequence[int], num_images: int, num_processed: int, expected_tokens: Sequence[int] = ()
    ) -> None:
        """As :meth:`check_placeholders`, given how many images were processed (``num_processed``)."""
        n_tokens = sum(1 for t in ids if t == self.image_token_id)
        if expected_tokens and n_tokens != sum(expected_tokens):
            raise PlaceholderMismatch(
                f"{n_tokens} image placeholder tokens in the prompt, but its {num_images} images need "
                f"{sum(expected_tokens)} ({list(expected_tokens)})"
            )
        if num_images == 0 and n_tokens:
            raise PlaceholderMismatch(f"{n_tokens} image placeholder tokens in the prompt, but no images passed")
        if num_processed != num_images:
            raise PlaceholderMismatch(f"the prompt holds {num_images} images but {num_processed} were processed")

    def processed_images(self, ids: Sequence[int], vision: dict[str, torch.Tensor]) -> int:
        """How many images the processed inputs hold."""
        pv = vision.get("pixel_values")
        return 0 if pv is None else int(pv.shape[0])

    def collate(self, parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Vision inputs of several pieces (in sequence order) as one forward pass's inputs."""
        parts = [p for p in parts if p]
        if not parts:
            return {}
        return {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}

    def forward_extras(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra model inputs derived from the token ids of a chunk that holds images."""
        return {}

    # ---------------------------------------------------------------- positions
    def positions(self, ids: Sequence[int], vision: dict[str, torch.Tensor], start: int) -> tuple[torch.Tensor, int]:
        """Position ids of a chunk that starts at position ``start``, and the position after it."""
        n = len(ids)
        return torch.arange(start, start + n, dtype=torch.long), start + n

    def describe(self) -> str:
        return f"{self.name} ({type(self.model).__name__}), boxes as {self.bbox_format!r}"


class GenericAdapter(FamilyAdapter):
    """Any image-text-to-text model: ``"norm"`` boxes, 1-D positions, token counts measured by the processor."""


class QwenVLAdapter(FamilyAdapter):
    """Shared by the Qwen-VL families: dynamic resolution on a patch grid, multimodal RoPE."""

    mrope = True
    can_downscale = True
    vision_keys = ("pixel_values", "image_grid_thw")

    def __init__(self, model: Any, processor: Any) -> None:
        super().__init__(model, processor)
        ip = self.image_processor
        self.patch_size = int(getattr(ip, "patch_size", 14))
        self.merge_size = int(getattr(ip, "merge_size", 2))
        self.factor = self.patch_size * self.merge_size
        size = getattr(ip, "size", None)
        self.min_pixels = int(getattr(ip, "min_pixels", None) or _size_value(size, "shortest_edge") or 56 * 56)
        self.max_pixels = int(getattr(ip, "max_pixels", None) or _size_value(size, "longest_edge") or 28 * 28 * 1280)
        self._rope_owner = _find_rope_owner(model)

    def target_size(self, width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
        """(width, height) the processor resizes an image to (Qwen's ``smart_resize``)."""
        h, w = smart_resize(height, width, self.factor, self.min_pixels, max_pixels or self.max_pixels)
        return w, h

    def prepare_image(self, pixels: np.ndarray, max_tokens: int | None = None) -> PreparedImage:
        height, width = pixels.shape[:2]
        cap = self.max_pixels
        if max_tokens is not None:
            cap = min(cap, max(self.min_pixels, int(max_tokens) * self.factor**2))
        w, h = self.target_size(width, height, cap)
        image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
        if (w, h) != image.size:
            image = image.resize((w, h), Image.BICUBIC)
        return PreparedImage(image, (w, h), self.image_tokens(image), (width, height))

    def image_tokens(self, image: Image.Image) -> int:
        w, h = image.size
        tw, th = self.target_size(w, h)
        return (tw // self.factor) * (th // self.factor)

    def processed_images(self, ids: Sequence[int], vision: dict[str, torch.Tensor]) -> int:
        grid = vision.get("image_grid_thw")
        return 0 if grid is None else int(grid.shape[0])

    def forward_extras(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (ids == self.image_token_id).long()}

    def positions(self, ids: Sequence[int], vision: dict[str, torch.Tensor], start: int) -> tuple[torch.Tensor, int]:
        ids_t = torch.tensor([list(ids)], dtype=torch.long)
        grid = vision.get("image_grid_thw")
        if grid is None or not (ids_t == self.image_token_id).any():
            pos = torch.arange(start, start + len(ids), dtype=torch.long).expand(3, -1)
            return pos, start + len(ids)
        pos, _ = self._rope_owner.get_rope_index(
            input_ids=ids_t, mm_token_type_ids=(ids_t == self.image_token_id).long(), image_grid_thw=grid.cpu()
        )
        pos = pos[:, 0, :].cpu() + start
        return pos, int(pos.max()) + 1


class Qwen25VLAdapter(QwenVLAdapter):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    bbox_format = "pixel"


class Qwen2VLAdapter(QwenVLAdapter):
    name = "qwen2_vl"
    model_types = ("qwen2_vl",)
    bbox_format = "norm1000"


class Qwen3VLAdapter(QwenVLAdapter):
    name = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    bbox_format = "norm1000"


class Idefics3Adapter(FamilyAdapter):
    """Idefics3 and SmolVLM: images (optionally split into tiles) as fixed-length token blocks; 1-D positions."""

    name = "idefics3"
    model_types = ("idefics3", "smolvlm")
    bbox_format = "norm"
    nested_images = True
    vision_keys = ("pixel_values", "pixel_attention_mask")

    def processed_images(self, ids: Sequence[int], vision: dict[str, torch.Tensor]) -> int:
        # The processor writes one global-image marker per image (whether or not it splits it into tiles).
        marker = getattr(self.processor, "global_image_token", None) or "<global-img>"
        marker_id = self.tokenizer.convert_tokens_to_ids(marker)
        if vision.get("pixel_values") is None:
            return 0
        return sum(1 for t in ids if t == marker_id)

    def collate(self, parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        parts = [p for p in parts if p]
        if not parts:
            return {}
        pvs = [p["pixel_values"].flatten(0, 1) for p in parts]  # (crops, C, H, W)
        masks = [
            p.get("pixel_attention_mask", torch.ones(p["pixel_values"].shape[:2] + p["pixel_values"].shape[-2:],
                                                     dtype=torch.long)).flatten(0, 1)
            for p in parts
        ]
        h = max(x.shape[-2] for x in pvs)
        w = max(x.shape[-1] for x in pvs)
        pvs = [torch.nn.functional.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2])) for x in pvs]
        masks = [torch.nn.functional.pad(m, (0, w - m.shape[-1], 0, h - m.shape[-2])) for m in masks]
        return {"pixel_values": torch.cat(pvs)[None], "pixel_attention_mask": torch.cat(masks)[None]}


class LlavaAdapter(FamilyAdapter):
    """LLaVA (CLIP tower, fixed square input): views are resized to the square so nothing is centre-cropped away."""

    name = "llava"
    model_types = ("llava",)
    bbox_format = "norm"

    def prepare_image(self, pixels: np.ndarray, max_tokens: int | None = None) -> PreparedImage:
        height, width = pixels.shape[:2]
        image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
        crop = getattr(self.image_processor, "crop_size", None)
        side_w = _size_value(crop, "width") or _size_value(crop, "shortest_edge")
        side_h = _size_value(crop, "height") or side_w
        if side_w and side_h and image.size != (side_w, side_h):
            image = image.resize((int(side_w), int(side_h)), Image.BICUBIC)
        return PreparedImage(image, image.size, self.image_tokens(image), (width, height))


ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    Qwen25VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter, Idefics3Adapter, LlavaAdapter,
)


def register_family(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Class decorator: add an adapter for a family defined outside this module (checked before the built-in ones)."""
    global ADAPTERS
    ADAPTERS = (cls, *(a for a in ADAPTERS if a is not cls))
    return cls


def adapter_class_for(model_type: str) -> type[FamilyAdapter]:
    """The adapter class for a ``config.model_type`` (:class:`GenericAdapter` when the family is unknown)."""
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    return GenericAdapter


def make_adapter(model: Any, processor: Any) -> FamilyAdapter:
    """The adapter for ``model`` (chosen by its ``config.model_type``)."""
    return adapter_class_for(getattr(model.config, "model_type", ""))(model, processor)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's resize rule: sides divisible by ``factor``, area within [min_pixels, max_pixels], aspect kept.

    Same arithmetic as ``transformers``' ``smart_resize`` (which the processor applies); returns (height, width).
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be under 200, got {max(height, width) / min(height, width):.0f}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _find_rope_owner(model: Any) -> Any:
    """The submodule that implements ``get_rope_index`` (the inner multimodal model)."""
    for candidate in (getattr(model, "model", None), model):
        if candidate is not None and hasattr(candidate, "get_rope_index"):
            return candidate
    raise ValueError(f"{type(model).__name__} has no get_rope_index; it is not a Qwen-VL model")


# Families bundled with MedVR outside this package register their adapter (and their transformers Auto classes)
# when imported, so checkpoints of theirs load through load_vlm like any other.
import agents.tinyvlm  # noqa: E402,F401

__all__ = [
    "ADAPTERS",
    "FamilyAdapter",
    "GenericAdapter",
    "Idefics3Adapter",
    "LlavaAdapter",
    "PlaceholderMismatch",
    "PreparedImage",
    "Processed",
    "Qwen25VLAdapter",
    "Qwen2VLAdapter",
    "Qwen3VLAdapter",
    "QwenVLAdapter",
    "adapter_class_for",
    "make_adapter",
    "register_family",
    "smart_resize",
]
