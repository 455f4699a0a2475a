"""The VLM policy: any Hugging Face image-text-to-text model as a MedVR agent.

Modules, one job each:

- :mod:`~agents.vlm.loading`: load a model and its processor from a folder or Hub id (image-only fallback
  without torchvision);
- :mod:`~agents.vlm.families`: per-family adapters (box convention, image preparation, token counts, positions);
- :mod:`~agents.vlm.prompts`: chat messages from the env's tool schemas, rendered with the checkpoint's template;
- :mod:`~agents.vlm.conversation`: one episode's messages, images and exact token sequence;
- :mod:`~agents.vlm.budget`: the image budget (cap, downscale, evict to a text stub);
- :mod:`~agents.vlm.sampling`: temperature, top-p/top-k, max tokens and turns, stop strings, logits hooks;
- :mod:`~agents.vlm.entropy`: token entropy and log-probabilities from the sampler's logits; tool-argument tokens;
- :mod:`~agents.vlm.engine`: batched multi-turn generation with the key/value cache kept between turns; per-row
  cursors; forking cache rows;
- :mod:`~agents.vlm.branching`: EVR group rollouts (branch where the coordinate entropy rises, shared prefixes);
- :mod:`~agents.vlm.trajectory`: what a trainer gets from each rollout;
- :mod:`~agents.vlm.policy` / :mod:`~agents.vlm.agent`: the batched policy and the one-env ``Agent``.

Importing this package imports torch and transformers; ``medvr_env`` never does.
"""

from .agent import VLMAgent
from .branching import Branch, EVRConfig, GroupRollouts, RolloutGroup
from .budget import ImageBudget
from .families import FamilyAdapter, PlaceholderMismatch, adapter_class_for
from .loading import LoadedVLM, load_processor, load_vlm
from .policy import VLMPolicy
from .prompts import PromptStyle, TemplateError
from .sampling import SamplingConfig
from .trajectory import Rollout, Segment, TurnRecord

__all__ = [
    "Branch",
    "EVRConfig",
    "FamilyAdapter",
    "GroupRollouts",
    "ImageBudget",
    "LoadedVLM",
    "PlaceholderMismatch",
    "PromptStyle",
    "Rollout",
    "RolloutGroup",
    "SamplingConfig",
    "Segment",
    "TemplateError",
    "TurnRecord",
    "VLMAgent",
    "VLMPolicy",
    "adapter_class_for",
    "load_processor",
    "load_vlm",
]
