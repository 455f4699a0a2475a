"""Wrappers over MedVRVQAEnv: text actions (the VLM path), SB3 encodings, entropy-guided regrounding."""

from .regrounding import EntropyRegrounding
from .sb3_actions import (
    ActionCodec,
    DiscreteActions,
    InvalidActionError,
    MultiDiscreteActions,
    answer_vocabulary,
    grid_regions,
)
from .sb3_observation import SB3Observation
from .text_actions import TextActions
from .tokens import Tokenizer

__all__ = [
    "ActionCodec",
    "DiscreteActions",
    "EntropyRegrounding",
    "InvalidActionError",
    "MultiDiscreteActions",
    "SB3Observation",
    "TextActions",
    "Tokenizer",
    "answer_vocabulary",
    "grid_regions",
]
