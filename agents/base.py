"""The agent interface every bundled policy implements, and the registry ``medvr run --agent`` reads."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym

from medvr_env import MedVRVQAEnv
from medvr_env.importing import import_object


@runtime_checkable
class Agent(Protocol):
    """A policy acting in one MedVR env.

    ``reset`` is called after ``env.reset`` with the unwrapped env (to read
    ``tool_names``, ``bbox_format`` and the episode record), ``act`` after each
    observation. ``act`` returns any action form the env accepts (see
    :class:`~medvr_env.MedVRVQAEnv`), optionally with the agent's own ``entropy``.
    """

    name: str

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None: ...

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> Any: ...


AGENTS: dict[str, str] = {
    "scripted": "agents.scripted:QuadrantSweepAgent",
    "no-zoom": "agents.scripted:NoZoomAgent",
    "guided": "agents.scripted:GuidedZoomAgent",
    "blob-detector": "agents.scripted:BlobDetectorAgent",
    "oracle": "agents.oracle:OracleAgent",  # reads evaluation-only finding boxes: a reference, never for training
    "random": "agents.scripted:RandomAgent",
    "majority": "agents.prior:MajorityAnswerAgent",
    "vlm": "agents.vlm:VLMAgent",
    "tiny": "agents.tinyvlm.agent:TinyAgent",
}


class AgentSetupError(ValueError):
    """The agent cannot act in this env as set up (a split or dataset it refuses, missing weights).

    Raised by an agent's ``__init__`` or ``reset``; ``medvr run``/``eval`` report it as one line.
    """


def policy_env(env: gym.Env, agent: Any) -> gym.Env:
    """The layer of ``env``'s wrapper stack that ``agent`` steps.

    ``env`` itself for agents with ``acts_in_wrapper_spaces = True``; otherwise the
    outermost layer whose observation and action spaces are the MedVR env's own, i.e.
    the same env without the wrappers that re-encode them (``SB3Observation``,
    ``MultiDiscreteActions``, ``DiscreteActions``, ``TextActions``). Other wrappers
    below those (time limits, order checks) stay in place.
    """
    if getattr(agent, "acts_in_wrapper_spaces", False):
        return env
    base = env.unwrapped
    layer = env
    while layer is not base and (layer.observation_space != base.observation_space
                                 or layer.action_space != base.action_space):
        layer = layer.env
    return layer


def make_agent(name: str, **kwargs: Any) -> Agent:
    """Build a bundled agent by name (see :data:`AGENTS`) or from ``"package.module:Class"``."""
    if name not in AGENTS and ":" not in name:
        raise ValueError(f"unknown agent {name!r}; bundled agents: {', '.join(sorted(AGENTS))}")
    return import_object(AGENTS.get(name, name), "agent")(**kwargs)
