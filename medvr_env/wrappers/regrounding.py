"""EntropyRegrounding: EVR's entropy-guided regrounding, recast as a reward term for classic RL."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import gymnasium as gym
from gymnasium.utils import RecordConstructorArgs

from ..branching import branch_probability, check_branch_params
from ..episode import Look

LOOK_TOOLS: tuple[str, ...] = ("zoom", "crop", "relook")
"""Deprecated: a look is now read from the step record (a step that made a new view), not from tool names."""


class EntropyRegrounding(gym.Wrapper, RecordConstructorArgs):
    """Reward looking again when the entropy channel has risen above the episode's baseline.

    ## Description

    MedVR's EVR (``docs/reference/method.md`` §2) watches the policy's entropy while it
    writes zoom coordinates. When that entropy rises above the trajectory's baseline
    (ΔH = H_tool − H_base > 0), the rollout forks with probability
    ``P = clip(P_base + γ·ΔH, 0, 1)`` so that extra rollouts explore other regions
    exactly where the policy does not know where to look. A classic RL learner (SB3)
    collects one trajectory at a time and cannot fork, so this wrapper keeps the
    trigger and the strength and turns the fork into a reward:

    ===========================  ==============================================
    EVR (VLM, GRPO rollouts)     this wrapper (one trajectory, any RL algorithm)
    ===========================  ==============================================
    H_base: entropy of the       the first known value of the entropy channel in
    trajectory's first tokens    the episode (``info["entropy"]`` of step 1: the
                                 uncertainty on the first view)
    H_tool: rolling entropy of   ``info["entropy"]`` of the current step: the
    the zoom-coordinate tokens   uncertainty the agent acted under
    ΔH = H_tool − H_base         the same
    fork with probability P      a look (a step that made a new view: ``zoom``,
                                 ``crop``, ``relook`` or any tool that adds a view;
                                 :class:`~medvr_env.episode.Look`)
                                 taken while ΔH > ``threshold`` earns the strength
                                 P = clip(P_base + γ·ΔH, 0, 1) (the expectation of
                                 the fork, not a coin flip)
    branch rewarded through      ``bonus · max P`` over the episode's regrounding
    R_tool, gated by accuracy    looks, paid once on the last step and, with
    (R = R_acc + 1[R_acc>0]·     ``gate_on_correct`` (default), only when the
    R_tool)                      answer is correct
    ===========================  ==============================================

    Paying once per episode and only for correct answers means looking again cannot be
    farmed for reward: it pays only when the extra look ends in a right answer.
    Defaults follow the method reference: ``p_base=0.5`` (ARPO's τ), ``gamma=0.5``
    (the paper's best γ), ``bonus=0.5`` (the tool reward CCA gives a correct trajectory
    that zoomed). The entropy can come from the policy (reported with its actions) or
    from the env's ``uncertainty_estimator``; with neither, the channel is empty and this
    wrapper changes nothing. The term is only as informative as the channel: if the
    entropy barely depends on the view, ΔH > 0 happens by noise and the term rewards
    looking as such.

    ## Rewards

    The inner reward plus, on the episode's last step, the regrounding term, which is
    also added to ``info["reward_terms"]["regrounding"]`` (0 on other steps).
    ``info["regrounding"]`` reports ``h_base``, ``dh``, ``p`` (0 when this step was not a
    regrounding look) and ``best_p`` so far.

    ## Arguments

    ``p_base`` (0.5), ``gamma`` (0.5), ``bonus`` (0.5, the scale of the term),
    ``threshold`` (0.0; ΔH must exceed it), ``gate_on_correct`` (True).
    ``look_tools`` is deprecated (a ``DeprecationWarning``): looks are read from the step
    records; when given, a look must also come from one of these tool names.
    """

    def __init__(
        self,
        env: gym.Env,
        p_base: float = 0.5,
        gamma: float = 0.5,
        bonus: float = 0.5,
        threshold: float = 0.0,
        gate_on_correct: bool = True,
        look_tools: Sequence[str] | None = None,
    ) -> None:
        RecordConstructorArgs.__init__(
            self, p_base=p_base, gamma=gamma, bonus=bonus, threshold=threshold,
            gate_on_correct=gate_on_correct, look_tools=list(look_tools) if look_tools is not None else None,
        )
        gym.Wrapper.__init__(self, env)
        check_branch_params(p_base, gamma)
        for name, value in (("bonus", bonus), ("threshold", threshold)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if look_tools is not None:
            if isinstance(look_tools, str) or not look_tools:
                raise ValueError(f"look_tools must be a non-empty list of tool names, got {look_tools!r}")
            warnings.warn("EntropyRegrounding(look_tools=...) is deprecated: a look is any step that made a new "
                          "view (read from the step record); drop the argument", DeprecationWarning, stacklevel=2)
        self.p_base, self.gamma = float(p_base), float(gamma)
        self.bonus, self.threshold = float(bonus), float(threshold)
        self.gate_on_correct = bool(gate_on_correct)
        self.look_tools = frozenset(look_tools) if look_tools is not None else None
        self._h_base: float | None = None
        self._best_p = 0.0

    def strength(self, dh: float) -> float:
        """``P = clip(P_base + γ·ΔH, 0, 1)``: EVR's branch rule (:func:`medvr_env.branching.branch_probability`)."""
        return branch_probability(dh, 0.0, self.p_base, self.gamma)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._h_base, self._best_p = None, 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        h = info.get("entropy")
        h = float(h) if isinstance(h, (int, float)) and math.isfinite(h) else None
        if self._h_base is None and h is not None:
            self._h_base = h
        steps = self.env.unwrapped.episode.steps
        look = Look.from_step(steps[-1]) if steps else None
        if look is not None and self.look_tools is not None and look.tool not in self.look_tools:
            look = None
        dh, p = 0.0, 0.0
        if h is not None and self._h_base is not None:
            dh = h - self._h_base
            if look is not None and dh > self.threshold:
                p = self.strength(dh)
                self._best_p = max(self._best_p, p)
        paid = 0.0
        if terminated or truncated:
            if self._best_p > 0 and (info.get("is_success") or not self.gate_on_correct):
                paid = self.bonus * self._best_p
        info = dict(info)
        info["reward_terms"] = {**info.get("reward_terms", {}), "regrounding": paid}
        info["regrounding"] = {"h_base": self._h_base, "dh": dh, "p": p, "best_p": self._best_p}
        return obs, float(reward) + paid, terminated, truncated, info


__all__ = ["LOOK_TOOLS", "EntropyRegrounding"]
