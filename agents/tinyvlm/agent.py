"""``medvr run --agent tiny``: the bundled tiny VLM (built by ``medvr sft --bundled``) as a MedVR agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.vlm.agent import VLMAgent

from .build import bundled_path

BUILD_HINT = (
    "the bundled tiny VLM is not built yet (looked in {path}). Build it once with\n"
    "    medvr sft --bundled\n"
    "(about 18 minutes on 2 CPU cores; needs VQA-RAD in $MEDVR_DATA/vqa_rad or --data-root, and writes to "
    "$MEDVR_CACHE/tinyvlm, default ~/.cache/medvr/tinyvlm), or pass --model PATH to use another checkpoint"
)


class TinyAgent(VLMAgent):
    """The VLM agent with the bundled tiny VLM as its default model (greedy, at most 96 new tokens per turn)."""

    name = "tiny"

    def __init__(self, model: str | None = None, *, max_new_tokens: int = 96, device: str = "cpu",
                 **kwargs: Any) -> None:
        path = Path(model) if model else bundled_path()
        if not (path / "config.json").is_file():
            if model:  # the user named a checkpoint: say that one is missing, not that the bundled one is
                raise FileNotFoundError(f"--model {model}: no checkpoint there (a folder with config.json, as "
                                        "`medvr sft --out` or save_pretrained writes)")
            raise FileNotFoundError(BUILD_HINT.format(path=path))
        super().__init__(str(path), max_new_tokens=max_new_tokens, device=device, **kwargs)


__all__ = ["BUILD_HINT", "TinyAgent"]
