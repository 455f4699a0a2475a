"""VLMPolicy: a Hugging Face vision-language model acting in MedVR envs, one or many episodes at a time.

    from agents.vlm import VLMPolicy, SamplingConfig
    policy = VLMPolicy("/models/Qwen2.5-VL-7B-Instruct", sampling=SamplingConfig(temperature=1.0, max_new_tokens=512))
    envs = [gym.make("MedVR-VQA-Text-v0") for _ in range(16)]
    rollouts = policy.rollout(envs, seeds=range(16))     # batched; episodes end at different turns
    rollouts[0].segments[0].token_ids, rollouts[0].turns[0].entropy, rollouts[0].episode.grade

The policy sets each env's ``bbox_format`` to its family's convention (:mod:`agents.vlm.families`), renders the
system prompt from the env's enabled tools, sends each turn's raw text to the env together with the turn's entropy,
tool-argument entropy, per-token entropies and the sizes it showed each view at, and returns per-episode trainer
data (:mod:`agents.vlm.trajectory`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable, Sequence

import torch

from medvr_env.boxes import check_format

from .branching import EVRConfig, GroupRollouts, GroupRunner
from .budget import ImageBudget
from .conversation import Conversation, TurnOutput
from .engine import BatchState, Engine, ForkObserver
from .entropy import normalised_entropy
from .loading import LoadedVLM, load_vlm
from .prompts import ChatRenderer, PromptStyle
from .sampling import SamplingConfig, end_of_turn_ids
from .trajectory import Rollout, Segment

log = logging.getLogger(__name__)


class VLMPolicy:
    """A vision-language model as a MedVR policy.

    Args:
        model: A checkpoint folder or Hub id (loaded with :func:`~agents.vlm.loading.load_vlm`), or a
            :class:`~agents.vlm.loading.LoadedVLM`.
        sampling: Temperature, top-p/top-k, max new tokens per turn, max turns, stop strings, seed, logits hooks.
        budget: The image budget (:class:`~agents.vlm.budget.ImageBudget`).
        style: Wording of the env's turns.
        cache_reuse: Keep the key/value cache from turn to turn (default) or re-encode every turn.
        bbox_format: Override the family's box convention (for a checkpoint fine-tuned on another one).
        set_env_format: Set each env's ``bbox_format`` to the policy's (default). When off, a mismatch is an error.
        chat_template: Override the checkpoint's chat template.
        **load_kwargs: ``device``, ``dtype``, ``attn_implementation``, ``processor_kwargs``, ... for loading.
    """

    def __init__(
        self,
        model: str | LoadedVLM,
        *,
        sampling: SamplingConfig | None = None,
        budget: ImageBudget | None = None,
        style: PromptStyle | None = None,
        cache_reuse: bool = True,
        bbox_format: str | None = None,
        set_env_format: bool = True,
        chat_template: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        self.vlm = model if isinstance(model, LoadedVLM) else load_vlm(model, **load_kwargs)
        self.sampling = sampling or SamplingConfig()
        self.budget = budget or ImageBudget()
        self.style = style or PromptStyle()
        self.bbox_format = check_format(bbox_format or self.vlm.adapter.bbox_format)
        self.set_env_format = set_env_format
        if chat_template:
            self.vlm.processor.chat_template = chat_template
        self.renderer = ChatRenderer(self.vlm.processor)
        self.eos_ids = end_of_turn_ids(self.vlm.model, self.vlm.tokenizer)
        self.engine = Engine(self.vlm.model, self.vlm.adapter, self.sampling, self.eos_ids, cache_reuse)
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ properties
    @property
    def adapter(self):
        return self.vlm.adapter

    @property
    def model(self):
        return self.vlm.model

    @property
    def tokenizer(self):
        return self.vlm.tokenizer

    @property
    def cache_reuse(self) -> bool:
        return self.engine.cache_reuse

    @cache_reuse.setter
    def cache_reuse(self, value: bool) -> None:
        self.engine.cache_reuse = bool(value)

    # ------------------------------------------------------------------ envs
    def configure_env(self, env: Any) -> None:
        """Make ``env`` read boxes in the policy's convention (the model's boxes land where it meant them)."""
        base = env.unwrapped
        if base.bbox_format == self.bbox_format:
            return
        if not self.set_env_format:
            raise ValueError(
                f"the env reads boxes as {base.bbox_format!r} but {self.adapter.name} writes {self.bbox_format!r}; "
                f"make the env with bbox_format={self.bbox_format!r} or let the policy set it"
            )
        log.info("setting the env's bbox_format from %r to %r for %s", base.bbox_format, self.bbox_format,
                 self.adapter.name)
        base.set_bbox_format(self.bbox_format)

    def start(self, env: Any, obs: dict[str, Any], info: dict[str, Any], key: Any = None) -> Conversation:
        """A conversation for the episode ``env`` has just been reset to."""
        self.configure_env(env)
        return Conversation(
            env, obs, info, adapter=self.adapter, renderer=self.renderer, budget=self.budget, style=self.style,
            eos_ids=self.eos_ids, max_turns=self.sampling.max_turns, key=key,
        )

    # ------------------------------------------------------------------ rollouts
    def rollout(
        self,
        envs: Sequence[Any],
        *,
        seeds: Iterable[int | None] | None = None,
        options: Sequence[dict[str, Any] | None] | None = None,
        keys: Sequence[Any] | None = None,
    ) -> list[Rollout]:
        """Reset every env and play one episode in each, all in one batch; returns one rollout per env.

        Episodes end at different turns; finished rows leave the batch (and its cache) as they end.
        """
        envs = list(envs)
        seeds = list(seeds) if seeds is not None else [None] * len(envs)
        options = list(options) if options is not None else [None] * len(envs)
        keys = list(keys) if keys is not None else list(range(len(envs)))
        if not len(seeds) == len(options) == len(keys) == len(envs):
            raise ValueError("seeds, options and keys must have one entry per env")
        convs = []
        for env, seed, opt, key in zip(envs, seeds, options, keys):
            obs, info = env.reset(seed=seed, options=opt)
            convs.append(self.start(env, obs, info, key=key))
        return self.play(convs)

    def play(self, convs: Sequence[Conversation]) -> list[Rollout]:
        """Play started conversations to the end in one batch."""
        self.engine.seed(self.sampling.seed)
        state = BatchState.start(convs)
        while state.rows:
            outputs = self.generate_turn(state)
            for conv, out in zip(state.convs, outputs):
                self.step(conv, out)
            self.engine.drop(state, [r for r, conv in enumerate(state.convs) if not conv.finished])
        self.last_stats = dict(state.stats)
        return [conv.to_rollout() for conv in convs]

    def rollout_groups(
        self,
        make_env: Callable[[], Any],
        *,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[dict[str, Any] | None] | None = None,
        evr: EVRConfig | None = None,
    ) -> GroupRollouts:
        """EVR: play a group of ``evr.group_size`` trajectories for each sample, all samples in one batch.

        Half the group (``evr.independent``) are independent rollouts; the other slots go to branches forked where
        the coordinate entropy rises above the trajectory's baseline, and unused slots to fresh rollouts
        (:mod:`agents.vlm.branching`).

        Args:
            make_env: Builds one env (called as envs are needed; finished trajectories' envs are reused). Every
                env must be built the same way: a branch's env is restored from its parent's snapshot
                (``env.unwrapped.snapshot()``/``restore()``: the episode and its RNG). Wrappers' own state is not
                forked, so a wrapper that keeps per-episode state must derive it from the episode record.
            seeds, options: Per sample, the ``reset`` seed and options that select it (one of them is enough;
                e.g. ``options=[{"index": i} for i in batch]``). Every trajectory of a group resets with them.
            evr: Group size, budget split, window, baseline length, P_base, γ, seed (:class:`EVRConfig`).

        Returns:
            :class:`~agents.vlm.branching.GroupRollouts`: one :class:`~agents.vlm.branching.RolloutGroup` per
            sample (``rollouts``: exactly ``group_size`` :class:`Rollout` s with keys ``(sample, id)``, and the
            ``branches`` made), and ``stats`` (engine counters, branches, branch rate, shared tokens).
        """
        if seeds is None and options is None:
            raise ValueError("give the samples as seeds=[...] and/or options=[...] (one entry per sample)")
        n = len(seeds) if seeds is not None else len(options or [])
        seeds = list(seeds) if seeds is not None else [None] * n
        options = list(options) if options is not None else [None] * n
        if len(seeds) != len(options):
            raise ValueError(f"seeds and options must have one entry per sample, got {len(seeds)} and {len(options)}")
        result = GroupRunner(self, make_env, evr or EVRConfig()).run(seeds, options)
        self.last_stats = dict(result.stats)
        return result

    def generate_turn(self, state: BatchState, observer: ForkObserver | None = None) -> list[TurnOutput]:
        """One turn for every row of ``state``: feed what each row has not fed yet, then decode to each row's end.

        ``observer`` sees rows as their turn ends and may fork them (EVR); the outputs then include the forks.
        """
        logits = self.engine.prefill(state)
        return self.engine.decode_turn(state, logits, observer)

    @staticmethod
    def step(conv: Conversation, out: TurnOutput) -> None:
        """Record a generated turn, send it to the env and record the env's answer."""
        action = conv.add_turn(out)
        _, _, terminated, truncated, _ = conv.env.step(action)
        conv.add_result(terminated or truncated)

    # ------------------------------------------------------------------ trainer side
    def model_inputs(self, segment: Segment) -> dict[str, torch.Tensor]:
        """Inputs for ``model(**inputs)`` reproducing ``segment`` in one forward (a trainer's recomputation)."""
        adapter = self.adapter
        ids = list(segment.token_ids)
        vision = adapter.image_inputs(segment.images)
        adapter.check_placeholders(ids, len(segment.images), vision)
        pos, _ = adapter.positions(ids, vision, 0)
        ids_t = torch.tensor([ids], dtype=torch.long)
        inputs = {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t),
                  "position_ids": pos[:, None, :] if adapter.mrope else pos[None, :], **vision}
        if vision:
            inputs.update(adapter.forward_extras(ids_t))
        return inputs

    def score(self, segment: Segment, return_logits: bool = False) -> dict[str, torch.Tensor]:
        """Log-probabilities and normalised entropies of every token of ``segment`` from one forward pass.

        Position ``i`` scores token ``i`` (from the logits at ``i - 1``; position 0 is NaN), at the sampling
        temperature, the same distribution the rollout recorded.
        """
        device = self.engine.device
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                  for k, v in self.model_inputs(segment).items()}
        with torch.inference_mode():
            logits = self.model(**inputs, use_cache=False).logits[0].float()
        temperature = self.sampling.temperature if self.sampling.temperature > 0 else 1.0
        logp = torch.log_softmax(logits / temperature, dim=-1)
        ids = inputs["input_ids"][0]
        nan = torch.full((1,), math.nan, device=logits.device)
        out = {
            "logprobs": torch.cat([nan, logp[:-1].gather(-1, ids[1:, None]).squeeze(-1)]),
            "entropies": torch.cat([nan, normalised_entropy(logits[:-1], temperature)]),
        }
        if return_logits:
            out["logits"] = logits
        return out


__all__ = ["VLMPolicy"]
