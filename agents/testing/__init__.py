"""Test utilities for MedVR agents: tiny offline VLMs and forced-output logits processors."""

from .forcing import ForceText
from .grammar import ZoomGrammar
from .tiny_vlms import FAMILIES, build_tiny_vlm, build_tokenizer, tiny_vlm_cache

__all__ = ["FAMILIES", "ForceText", "build_tiny_vlm", "build_tokenizer", "tiny_vlm_cache", "ZoomGrammar"]
