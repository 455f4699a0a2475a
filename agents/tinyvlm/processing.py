"""Image processor, processor and chat template of the MedVR tiny VLM.

- :class:`MedVRTinyImageProcessor` (PIL backend, no torchvision): resize to the encoder's square (224 px), scale to
  [0, 1], normalise with mean = std = 0.5 per channel, the EfficientNet-Lite convention of
  :func:`agents.uncertainty.backbone.normalize`.
- :class:`MedVRTinyProcessor`: tokenises text and expands each ``<image>`` into ``image_seq_len`` placeholders.
- :data:`CHAT_TEMPLATE`: ChatML turns (``<|im_start|>role ... <|im_end|>``), images as
  ``<|vision_start|><image><|vision_end|>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

from agents.uncertainty.backbone import MEAN, STD

IMAGE_TOKEN = "<image>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
PAD_TOKEN = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, TURN_START, TURN_END, VISION_START, VISION_END, IMAGE_TOKEN)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><image><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class MedVRTinyImageProcessor(PilBackend):
    """Square resize to the encoder's input, then EfficientNet-Lite normalisation (mean = std = 0.5)."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = list(MEAN)
    image_std = list(STD)
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


class MedVRTinyProcessor(ProcessorMixin):
    """Tokeniser plus image processor; each ``<image>`` in the text becomes ``image_seq_len`` placeholders."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 image_token: str = IMAGE_TOKEN, image_seq_len: int = 49, **kwargs: Any) -> None:
        self.image_token = image_token
        self.image_seq_len = int(image_seq_len)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 add_special_tokens: bool = False, padding: bool | str = False, **kwargs: Any) -> BatchFeature:
        if text is None:
            raise ValueError("MedVRTinyProcessor needs text (with one <image> per image)")
        texts = [text] if isinstance(text, str) else list(text)
        flat = _flatten(images)
        n_marks = sum(t.count(self.image_token) for t in texts)
        if n_marks != len(flat):
            raise ValueError(f"the text holds {n_marks} {self.image_token} markers but {len(flat)} images were given")
        expanded = [t.replace(self.image_token, self.image_token * self.image_seq_len) for t in texts]
        data = dict(self.tokenizer(expanded, add_special_tokens=add_special_tokens, padding=padding,
                                   return_tensors=return_tensors))
        if flat:
            data.update(self.image_processor(images=flat, return_tensors=return_tensors))
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


def _flatten(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        out: list[Any] = []
        for item in images:
            out += _flatten(item) if isinstance(item, (list, tuple)) else [item]
        return out
    return [images]


__all__ = ["CHAT_TEMPLATE", "IMAGE_TOKEN", "SPECIAL_TOKENS", "MedVRTinyImageProcessor", "MedVRTinyProcessor"]
