"""The image budget: how many images and image tokens one episode may keep in the model's context.

Every zoom, crop or relook adds an image; a long episode would otherwise grow the context without bound (the
out-of-memory reports peers collect, and BALROG's ``max_image_history`` answer to them). Before a new image
enters the context, :meth:`ImageBudget.next_action` is asked until it has nothing left to do:

- more than ``max_images`` images: the oldest image is **evicted**, i.e. replaced by a one-line text stub (the model
  can ``relook`` at that view to get it back);
- more than ``max_image_tokens`` image tokens: with ``policy="downscale"`` on a dynamic-resolution family (Qwen-VL)
  the oldest image that is still above ``min_tokens_per_image`` is shown at a quarter of its tokens (half its
  sides); otherwise, or when nothing can shrink further, the oldest image is evicted.

The original view (the first image) goes last when ``keep_first`` is set. A single image larger than
``max_tokens_per_image`` is shown smaller from the start (dynamic-resolution families). Changing an image that is
already in the context invalidates the key/value cache after it, so the policy re-encodes the conversation on
that turn; the rollout's trainer data then starts a new segment (see :mod:`agents.vlm.trajectory`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

POLICIES = ("evict", "downscale")


@dataclass(frozen=True)
class BudgetAction:
    """``kind`` is ``"evict"`` or ``"downscale"``; ``slot`` is the image; ``max_tokens`` the new size cap."""

    kind: str
    slot: int
    max_tokens: int | None = None


@dataclass(frozen=True)
class LiveImage:
    """An image in the context, as the budget sees it."""

    slot: int
    tokens: int


@dataclass
class ImageBudget:
    """Limits on the images one episode keeps in context.

    Attributes:
        max_images: Images in context (``None``: no limit).
        max_image_tokens: Image placeholder tokens in context (``None``: no limit).
        max_tokens_per_image: Cap for any single image (dynamic-resolution families; ``None``: the processor's).
        policy: ``"evict"`` or ``"downscale"`` (see the module docstring).
        keep_first: Evict the original view only when nothing else is left.
        min_tokens_per_image: Downscaling stops here.
    """

    max_images: int | None = 8
    max_image_tokens: int | None = None
    max_tokens_per_image: int | None = None
    policy: str = "evict"
    keep_first: bool = True
    min_tokens_per_image: int = 16

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for name in ("max_images", "max_image_tokens", "max_tokens_per_image"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")

    def new_image_cap(self) -> int | None:
        """Token cap for a newly shown image."""
        caps = [c for c in (self.max_tokens_per_image, self.max_image_tokens) if c is not None]
        return min(caps) if caps else None

    def over(self, live: Sequence[LiveImage], new_tokens: int) -> tuple[bool, bool]:
        """(too many images, too many tokens) if an image of ``new_tokens`` tokens were added to ``live``."""
        too_many = self.max_images is not None and len(live) + 1 > self.max_images
        too_big = self.max_image_tokens is not None and sum(i.tokens for i in live) + new_tokens > self.max_image_tokens
        return too_many, too_big

    def next_action(self, live: Sequence[LiveImage], new_tokens: int, can_downscale: bool) -> BudgetAction | None:
        """The next change to the context that the new image needs, or ``None`` when it fits."""
        too_many, too_big = self.over(live, new_tokens)
        if not (too_many or too_big) or not live:
            return None
        order = list(live[1:]) + [live[0]] if self.keep_first else list(live)
        if too_big and not too_many and self.policy == "downscale" and can_downscale:
            for image in order:
                if image.tokens > self.min_tokens_per_image:
                    return BudgetAction("downscale", image.slot, max(self.min_tokens_per_image, image.tokens // 4))
        return BudgetAction("evict", order[0].slot)


__all__ = ["BudgetAction", "ImageBudget", "LiveImage", "POLICIES"]
