"""The family adapter of the MedVR tiny VLM: boxes as ``norm1000``, views resized to the encoder's square.

Why ``norm1000``: the model sees every view squashed to one 224 px square, so pixel boxes would live in a distorted
frame that differs from the view's real size; relative boxes do not. Of the relative conventions, integers 0-1000
tokenise into a few digit tokens each (the tokenizer splits digits), where 0-1 fractions add a "0." to every
coordinate; it is also the convention of Qwen2-VL and Qwen3-VL.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from agents.vlm.families import FamilyAdapter, PreparedImage, register_family
from agents.vlm.prompts import PromptStyle

from .configuration import MODEL_TYPE


@register_family
class MedVRTinyAdapter(FamilyAdapter):
    """Fixed-size images (one square, ``image_seq_len`` tokens each), 1-D positions, ``norm1000`` boxes."""

    name = "medvr_tiny"
    model_types = (MODEL_TYPE,)
    bbox_format = "norm1000"

    @property
    def side(self) -> int:
        return int(self.model.config.image_size)

    def prepare_image(self, pixels: np.ndarray, max_tokens: int | None = None) -> PreparedImage:
        height, width = pixels.shape[:2]
        image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
        if image.size != (self.side, self.side):
            image = image.resize((self.side, self.side), Image.BICUBIC)
        return PreparedImage(image, image.size, self.image_tokens(image), (width, height))

    def prompt_style(self, style: PromptStyle) -> PromptStyle:
        """Tools as one-line signatures: a 700-token JSON prefix would cost more than the rest of an episode."""
        return replace(style, compact_tools=True)

    def image_tokens(self, image: Image.Image) -> int:
        return int(self.model.config.image_seq_len)

    def suppressed_ids(self) -> list[int]:
        ids = set(super().suppressed_ids())
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if isinstance(pad, int):
            ids.add(pad)
        return sorted(ids)


__all__ = ["MedVRTinyAdapter"]
