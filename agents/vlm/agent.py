"""VLMAgent: the VLM policy behind the :class:`~agents.base.Agent` interface (``medvr run --agent vlm --model PATH``).

One episode at a time, turn by turn, through the same engine as batched rollouts (a batch of one). Defaults suit
evaluation: greedy decoding, 512 new tokens per turn, the key/value cache kept between turns.
"""

from __future__ import annotations

from typing import Any

from medvr_env import MedVRVQAEnv

from .budget import ImageBudget
from .conversation import Conversation
from .engine import BatchState
from .loading import LoadedVLM
from .policy import VLMPolicy
from .sampling import SamplingConfig
from .trajectory import Rollout


class VLMAgent:
    """A Hugging Face vision-language model as a MedVR agent.

    Args:
        model: Checkpoint folder or Hub id (``--model PATH``), a loaded model, or ``None`` with ``policy=``.
        policy: An existing :class:`~agents.vlm.policy.VLMPolicy` to act with (shares its model).
        temperature, top_p, top_k, max_new_tokens, seed: Sampling (``temperature=0`` is greedy).
        max_images, max_image_tokens, max_tokens_per_image, budget_policy: The image budget.
        cache_reuse: Keep the key/value cache between turns.
        bbox_format: Override the family's box convention.
        **load_kwargs: ``device``, ``dtype``, ``attn_implementation``, ``processor_kwargs``.
    """

    name = "vlm"

    def __init__(
        self,
        model: str | LoadedVLM | None = None,
        *,
        policy: VLMPolicy | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 512,
        seed: int | None = 0,
        max_images: int | None = 8,
        max_image_tokens: int | None = None,
        max_tokens_per_image: int | None = None,
        budget_policy: str = "evict",
        cache_reuse: bool = True,
        bbox_format: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        if policy is None:
            if model is None:
                raise ValueError("the vlm agent needs a model: medvr run --agent vlm --model PATH")
            policy = VLMPolicy(
                model,
                sampling=SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k,
                                        max_new_tokens=max_new_tokens, seed=seed),
                budget=ImageBudget(max_images=max_images, max_image_tokens=max_image_tokens,
                                   max_tokens_per_image=max_tokens_per_image, policy=budget_policy),
                cache_reuse=cache_reuse, bbox_format=bbox_format, **load_kwargs,
            )
        self.policy = policy
        self.rollouts: list[Rollout] = []  # trainer records of finished episodes (the last 100), most recent last
        self._conv: Conversation | None = None
        self._state: BatchState | None = None
        self._episodes = 0

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self._finish()
        if self._episodes == 0:
            self.policy.engine.seed(self.policy.sampling.seed)
        self._conv = self.policy.start(env, obs, info, key=self._episodes)
        self._state = BatchState.start([self._conv])
        self._episodes += 1

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        if self._conv is None or self._state is None:
            raise RuntimeError("call reset(env, obs, info) before act")
        if self._conv.turns:  # the env answered our last action: add its tool result
            self._conv.add_result(done=False)
        (out,) = self.policy.generate_turn(self._state)
        return self._conv.add_turn(out)

    @property
    def last_rollout(self) -> Rollout | None:
        """The trainer record of the current episode (so far), or of the last one."""
        if self._conv is not None:
            return self._conv.to_rollout()
        return self.rollouts[-1] if self.rollouts else None

    def _finish(self) -> None:
        if self._conv is not None:
            self._conv.finished = True
            self.rollouts.append(self._conv.to_rollout())
            self.rollouts = self.rollouts[-100:]
            self._conv = self._state = None


__all__ = ["VLMAgent"]
