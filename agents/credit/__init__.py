"""Credit assignment for MedVR, free of torch: footprints, CCA consensus credit, EVR's branch rule.

- :mod:`~agents.credit.footprint`: where a trajectory zoomed in, as a mask on a grid over the
  original image (read from step records: :meth:`medvr_env.episode.Episode.looks`).
- :mod:`~agents.credit.cca`: :func:`consensus_credit`, CCA over one sample's group of finished
  trajectories (GRPO-style trainers), with every edge case decided and reported.
- :mod:`~agents.credit.wrapper`: :class:`CCAReward`, the same reward for trainers that see one
  episode at a time (SB3, a user's loop), from an online per-sample bank.
- :func:`branch_probability`: EVR's ``P = clip(P_base + γ·ΔH, 0, 1)``
  (defined once in :mod:`medvr_env.branching`).

Importing this package never imports torch, so vector-env workers and any trainer can use it.
"""

from medvr_env.branching import DEFAULT_GAMMA, DEFAULT_P_BASE, branch_probability
from medvr_env.episode import Look, looks_in_steps

from .cca import (
    AGREE_REWARD,
    DEFAULT_ETA,
    DEFAULT_MIN_CORRECT,
    LOOKED_REWARD,
    VOTERS,
    Case,
    ConsensusCredit,
    LookCredit,
    TrajectoryCredit,
    batch_consensus_credit,
    consensus_credit,
    majority_mask,
    score_footprint,
)
from .footprint import (
    DEFAULT_GRID,
    Footprint,
    Grid,
    episode_footprint,
    footprint_mask,
    grid_shape,
    mask_iou,
    mask_overlap,
    read_footprint,
)
from .wrapper import BANK_FORMAT, CCAReward, load_vec_bank_state, merge_bank_states, vec_bank_state

__all__ = [
    "AGREE_REWARD",
    "BANK_FORMAT",
    "CCAReward",
    "Case",
    "ConsensusCredit",
    "DEFAULT_ETA",
    "DEFAULT_GAMMA",
    "DEFAULT_GRID",
    "DEFAULT_MIN_CORRECT",
    "DEFAULT_P_BASE",
    "Footprint",
    "Grid",
    "LOOKED_REWARD",
    "Look",
    "LookCredit",
    "TrajectoryCredit",
    "VOTERS",
    "batch_consensus_credit",
    "branch_probability",
    "consensus_credit",
    "episode_footprint",
    "footprint_mask",
    "grid_shape",
    "load_vec_bank_state",
    "looks_in_steps",
    "majority_mask",
    "mask_iou",
    "mask_overlap",
    "merge_bank_states",
    "read_footprint",
    "score_footprint",
    "vec_bank_state",
]
