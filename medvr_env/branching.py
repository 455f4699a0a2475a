"""EVR's branch rule, the one formula shared by the VLM rollout and the regrounding wrapper.

MedVR's entropy-guided visual regrounding (``docs/reference/method.md`` §2) forks a rollout
where the policy's entropy over the zoom coordinates rises above the trajectory's own
baseline. The probability of that fork is ``P = clip(P_base + γ·ΔH, 0, 1)`` with
``ΔH = H_tool − H_base``. :class:`~medvr_env.wrappers.EntropyRegrounding` pays it as the
strength of a reward term; ``agents`` rollouts draw the fork with it. Both call this module
so the two readings of EVR cannot drift apart.
"""

from __future__ import annotations

import math

DEFAULT_P_BASE = 0.5
"""P_base: ARPO's τ, the branch probability when the coordinate entropy equals the baseline."""
DEFAULT_GAMMA = 0.5
"""γ: the paper's best entropy weight."""


def check_branch_params(p_base: float, gamma: float) -> None:
    """Raise ``ValueError`` unless ``p_base`` is a probability and ``gamma`` a finite number."""
    for name, value in (("p_base", p_base), ("gamma", gamma)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= p_base <= 1.0:
        raise ValueError(f"p_base is a probability in [0, 1], got {p_base!r}")


def branch_probability(
    h_tool: float, h_base: float, p_base: float = DEFAULT_P_BASE, gamma: float = DEFAULT_GAMMA
) -> float:
    """``P = clip(P_base + γ·(H_tool − H_base), 0, 1)``; a non-finite entropy gives ``P_base``.

    Entropies are normalised token entropies (divided by log |V|), so ΔH is of order 0.1.

    >>> branch_probability(0.6, 0.2)
    0.7
    >>> branch_probability(0.0, 0.9, p_base=0.2, gamma=1.0)
    0.0
    """
    dh = float(h_tool) - float(h_base)
    if not math.isfinite(dh):
        return float(p_base)
    return min(max(p_base + gamma * dh, 0.0), 1.0)


__all__ = ["DEFAULT_GAMMA", "DEFAULT_P_BASE", "branch_probability", "check_branch_params"]
