"""MedVR's own small vision-language model: pretrained EfficientNet-Lite0 image tokens in a small decoder.

Importing this package registers the model with ``transformers``' Auto classes (``AutoConfig``,
``AutoModelForImageTextToText``, ``AutoImageProcessor``, ``AutoProcessor``; ``model_type="medvr_tiny"``) and its
family adapter with :mod:`agents.vlm.families`, so a saved checkpoint loads with ``from_pretrained`` and runs under
:class:`~agents.vlm.VLMPolicy`, ``medvr run/eval --agent vlm --model PATH`` and trainers, unchanged.

    from agents.tinyvlm import build_model, bundled_path
    path = build_model("/tmp/medvr-tiny", size="test")      # random decoder, real encoder weights, seconds
    # the bundled, trained agent: `medvr sft --bundled` (cached under $MEDVR_CACHE or ~/.cache/medvr/)
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

from .configuration import MODEL_TYPE, MedVRTinyConfig
from .modeling import MedVRTinyForConditionalGeneration
from .processing import MedVRTinyImageProcessor, MedVRTinyProcessor

AutoConfig.register(MODEL_TYPE, MedVRTinyConfig, exist_ok=True)
AutoModelForImageTextToText.register(MedVRTinyConfig, MedVRTinyForConditionalGeneration, exist_ok=True)
try:
    AutoImageProcessor.register(MedVRTinyConfig, image_processor_classes={"pil": MedVRTinyImageProcessor}, exist_ok=True)
except (ImportError, TypeError):  # transformers < 5.11 (verl's pin): no such keyword, and the class needs torchvision
    pass
AutoProcessor.register(MedVRTinyConfig, MedVRTinyProcessor, exist_ok=True)

from .build import SIZES, build_model, bundled_path
from .family import MedVRTinyAdapter

__all__ = [
    "MODEL_TYPE",
    "SIZES",
    "MedVRTinyAdapter",
    "MedVRTinyConfig",
    "MedVRTinyForConditionalGeneration",
    "MedVRTinyImageProcessor",
    "MedVRTinyProcessor",
    "build_model",
    "bundled_path",
]
