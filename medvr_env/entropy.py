"""The entropy channel's fallback: uncertainty estimators for policies that cannot report their own.

A policy that knows its uncertainty (the VLM policy knows its token entropy) sends it
with each action. For every other policy the env asks an estimator, given the episode
as the policy saw it just before acting. Estimators return a number in ``[0, 1]``
(normalised entropy) or ``None`` (unknown; the observation's ``entropy_mask`` is 0).

Pass one to the env as an object with an ``estimate(episode)`` method, as
``"none"``, or as an import path ``"package.module:ClassName"`` (built with no
arguments), which keeps ``gym.make`` kwargs JSON-friendly.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .episode import Episode
from .importing import import_object


@runtime_checkable
class UncertaintyEstimator(Protocol):
    def estimate(self, episode: Episode) -> float | None: ...


class NoEstimate:
    """Reports nothing: steps without a policy-reported entropy are masked out."""

    def estimate(self, episode: Episode) -> float | None:
        return None


class ConstantEstimate:
    """Reports a fixed value (useful as a baseline and in tests)."""

    def __init__(self, value: float = 0.5) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"a normalised entropy lies in [0, 1], got {value}")
        self.value = float(value)

    def estimate(self, episode: Episode) -> float | None:
        return self.value


def make_estimator(spec: Any) -> UncertaintyEstimator:
    """Build an estimator from ``None``/``"none"``, ``"module:Class"`` or an object with ``estimate``."""
    if spec is None or spec == "none":
        return NoEstimate()
    if isinstance(spec, str):
        spec = import_object(spec, "uncertainty_estimator")()
    if not isinstance(spec, UncertaintyEstimator):
        raise TypeError(f"an uncertainty estimator needs an estimate(episode) method, got {type(spec).__name__}")
    return spec
