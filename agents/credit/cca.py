"""CCA: consensus-based credit assignment over one prompt's group of finished trajectories.

MedVR (``docs/reference/method.md`` §3) rewards a correct trajectory for looking where the
other correct trajectories looked. For one sample's group:

1. every trajectory's *footprint* ``M_i`` is the union of its zoom boxes (original pixels),
   rasterised on a grid (:mod:`agents.credit.footprint`);
2. the *voters* T⁺ are the correct trajectories; the consensus mask is a strict majority
   vote ``M̂ = 1[Σ_{T⁺} M_i > |T⁺| / 2]``;
3. ``R_tool(T_j) = 1.0`` if ``IoU(M_j, M̂) > η`` else ``0.5``, and only for a correct answer:
   the total reward is ``R_acc + R_format + 1[R_acc > 0]·R_tool``.

Edge cases the paper leaves open (method.md §3.3 and §8.8), decided here; each member of
the result says which one it hit (:class:`Case`):

===================  ====================================================  ===========
case                 when                                                  R_tool
===================  ====================================================  ===========
``incorrect``        wrong answer, or none (truncated). Also every member  0 (gated)
                     when the group has **no correct trajectory**: then
                     there is no consensus at all.
``no_look``          correct without zooming (empty footprint). Tool       ``no_look_reward``
                     reward needs tool use, as in DeepEyes.                (default 0)
``too_few_correct``  correct and zoomed, but fewer than ``min_correct``    0.5
                     voters (default 2): with **exactly one** correct
                     trajectory ``M̂ = M_1`` and IoU would be 1 by
                     construction, which rewards agreeing with oneself.
``empty_consensus``  correct and zoomed, enough voters, but no cell has a  0.5
                     majority (``M̂`` empty): IoU is 0.
``agrees``           ``IoU(M_j, M̂) > η`` (strictly; default η = 0.5)       1.0
``disagrees``        ``IoU(M_j, M̂) <= η``                                  0.5
===================  ====================================================  ===========

Who votes (``voters``): ``"correct"`` (default, the paper's formula) counts every correct
trajectory, so correct ones that never zoomed vote for no cell and raise the majority bar;
``"correct_looking"`` counts only correct trajectories that zoomed (method.md's T⁺_zoom).
``min_correct`` counts voters.

Per-step credit: besides the terminal ``R_tool`` of each trajectory, every look is scored
against the consensus (``iou`` and ``overlap``, the share of the look's box inside ``M̂``),
so a trainer can see which zoom of a trajectory agreed. The paper only uses the terminal
term (GRPO normalises it per group); the per-look numbers are a trainer-neutral extra.
``relook`` steps are looks without a box: they get ``None`` (see :class:`medvr_env.episode.Look`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

import numpy as np

from .footprint import DEFAULT_GRID, EpisodeLike, Footprint, Grid, footprint_mask, grid_shape, mask_iou, mask_overlap
from .footprint import read_footprint

DEFAULT_ETA = 0.5
"""η: the IoU a footprint must exceed to agree with the consensus (paper value)."""
DEFAULT_MIN_CORRECT = 2
"""The fewest voters a consensus is formed from; below it a correct zooming trajectory gets 0.5."""
AGREE_REWARD = 1.0
"""R_tool of a correct trajectory whose footprint agrees with the consensus."""
LOOKED_REWARD = 0.5
"""R_tool of a correct trajectory that zoomed but did not (or could not) agree."""
VOTERS = ("correct", "correct_looking")


class Case(str, Enum):
    """Which rule decided a trajectory's ``R_tool`` (see the module docstring's table)."""

    INCORRECT = "incorrect"
    NO_LOOK = "no_look"
    TOO_FEW_CORRECT = "too_few_correct"
    EMPTY_CONSENSUS = "empty_consensus"
    AGREES = "agrees"
    DISAGREES = "disagrees"


@dataclass(frozen=True)
class LookCredit:
    """One look of a trajectory scored against the group's consensus.

    Attributes:
        step: ``StepRecord.step`` of the look (1-based).
        view: The view it created.
        box: Its applied box ``[x1, y1, x2, y2]`` in original pixels, ``None`` for a look without one (relook).
        iou: IoU of the box's mask with the consensus; ``None`` without a box or without a consensus.
        overlap: Share of the box's mask inside the consensus; ``None`` likewise.
    """

    step: int
    view: int
    box: list[int] | None
    iou: float | None
    overlap: float | None


@dataclass(frozen=True)
class TrajectoryCredit:
    """CCA's verdict on one member of the group.

    Attributes:
        correct: Whether its answer was correct.
        looked: Whether its footprint is non-empty (it zoomed somewhere).
        voted: Whether its footprint counted in the consensus.
        case: The rule that decided ``tool_reward``.
        iou: IoU of its footprint with the consensus; ``None`` when it did not zoom or no consensus was formed.
        tool_reward: ``R_tool``, already gated on correctness: add it to the reward at the last step.
        final_step: ``StepRecord.step`` of its last step (where ``tool_reward`` belongs; 0 if it has no steps).
        looks: Every look, scored (per-step credit).
    """

    correct: bool
    looked: bool
    voted: bool
    case: Case
    iou: float | None
    tool_reward: float
    final_step: int
    looks: tuple[LookCredit, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct, "looked": self.looked, "voted": self.voted, "case": self.case.value,
            "iou": self.iou, "tool_reward": self.tool_reward, "final_step": self.final_step,
            "looks": [vars(look) for look in self.looks],
        }


@dataclass(frozen=True)
class ConsensusCredit:
    """The result of :func:`consensus_credit` for one group.

    Attributes:
        members: One :class:`TrajectoryCredit` per trajectory, in the group's order.
        consensus: The consensus mask (``bool``, :func:`~agents.credit.footprint.grid_shape`), ``None`` when
            fewer than ``min_correct`` trajectories voted (including none correct).
        votes: How many voters' footprints cover each cell (``int``; all zero without voters).
        num_voters: ``|T⁺|``, the number of footprints that voted.
        grid_shape: ``(rows, columns)`` of the masks.
        eta, min_correct, voters: The settings used.
    """

    members: tuple[TrajectoryCredit, ...]
    consensus: np.ndarray | None = field(repr=False)
    votes: np.ndarray = field(repr=False)
    num_voters: int
    grid_shape: tuple[int, int]
    eta: float
    min_correct: int
    voters: str

    @property
    def tool_rewards(self) -> list[float]:
        return [m.tool_reward for m in self.members]

    @property
    def ious(self) -> list[float | None]:
        return [m.iou for m in self.members]

    @property
    def correct(self) -> list[bool]:
        return [m.correct for m in self.members]

    @property
    def cases(self) -> list[Case]:
        return [m.case for m in self.members]

    @property
    def no_correct(self) -> bool:
        """The group has no correct trajectory: no consensus, every ``R_tool`` is 0."""
        return not any(self.correct)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (the consensus as its share of the image, not the mask)."""
        return {
            "members": [m.to_dict() for m in self.members],
            "consensus_area": float(self.consensus.mean()) if self.consensus is not None else None,
            "num_voters": self.num_voters, "grid_shape": list(self.grid_shape),
            "eta": self.eta, "min_correct": self.min_correct, "voters": self.voters,
        }


def majority_mask(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(votes, M̂)``: per-cell vote counts and the strict majority ``votes > len(masks) / 2``.

    With no masks both are all zero / ``False``.
    """
    votes = np.zeros(shape, dtype=np.int32)
    for mask in masks:
        if mask.shape != shape:
            raise ValueError(f"footprint mask of shape {mask.shape} on a grid of shape {shape}")
        votes += mask
    return votes, 2 * votes > len(masks)


def score_footprint(
    correct: bool,
    mask: np.ndarray,
    consensus: np.ndarray | None,
    *,
    eta: float = DEFAULT_ETA,
    no_look_reward: float = 0.0,
) -> tuple[Case, float | None, float]:
    """``(case, iou, R_tool)`` of one footprint against a consensus (``None``: too few voters to form one).

    The one rule shared by :func:`consensus_credit` (whole groups) and
    :class:`~agents.credit.wrapper.CCAReward` (an online bank).
    """
    looked = bool(mask.any())
    iou = None if consensus is None or not looked else mask_iou(mask, consensus)
    if not correct:
        return Case.INCORRECT, iou, 0.0
    if not looked:
        return Case.NO_LOOK, None, float(no_look_reward)
    if consensus is None:
        return Case.TOO_FEW_CORRECT, None, LOOKED_REWARD
    if not consensus.any():
        return Case.EMPTY_CONSENSUS, 0.0, LOOKED_REWARD
    if iou > eta:
        return Case.AGREES, iou, AGREE_REWARD
    return Case.DISAGREES, iou, LOOKED_REWARD


def consensus_credit(
    group: Sequence[EpisodeLike],
    *,
    eta: float = DEFAULT_ETA,
    min_correct: int = DEFAULT_MIN_CORRECT,
    grid: Grid = DEFAULT_GRID,
    voters: str = "correct",
    correct: Sequence[bool] | None = None,
    no_look_reward: float = 0.0,
) -> ConsensusCredit:
    """CCA over one sample's group of finished trajectories (:class:`~medvr_env.Episode` objects or their records).

    Args:
        group: The trajectories of one prompt: ``Episode`` objects or ``Episode.to_dict()`` records,
            all of the same sample (same ``sample_id`` and image size).
        eta: IoU threshold η; a footprint agrees when its IoU with the consensus is strictly above it.
        min_correct: The fewest voters a consensus is formed from (default 2; 1 gives the paper's literal rule).
        grid: The mask grid (see :mod:`agents.credit.footprint`; default 64 × 64 cells).
        voters: ``"correct"`` (every correct trajectory votes) or ``"correct_looking"`` (only those that zoomed).
        correct: Correctness per member when the caller grades answers itself (e.g. a trainer's accuracy
            reward); default: each episode's ``grade["correct"]``.
        no_look_reward: ``R_tool`` of a correct trajectory that never zoomed (default 0).

    Returns:
        A :class:`ConsensusCredit`: per member ``tool_reward`` (gated), ``iou``, ``case`` and per-look credit;
        the consensus mask and vote counts.

    Example (two correct trajectories zoom on the same quadrant, one elsewhere; one wrong answer)::

        credit = consensus_credit([ep1, ep2, ep3, ep4])
        credit.tool_rewards   # [1.0, 1.0, 0.5, 0.0]
    """
    _check_settings(eta, min_correct, voters, no_look_reward)
    if isinstance(group, (str, bytes)) or not isinstance(group, Sequence) or not group:
        raise ValueError("group must be a non-empty sequence of finished episodes (Episode or Episode.to_dict())")
    footprints = [read_footprint(member) for member in group]
    flags = _correct_flags(footprints, correct)
    image_size = _same_image(footprints)
    shape = grid_shape(image_size, grid)
    masks = [footprint_mask(fp.boxes, image_size, grid) for fp in footprints]

    voted = [ok and (voters == "correct" or bool(mask.any())) for ok, mask in zip(flags, masks)]
    votes, majority = majority_mask([m for m, v in zip(masks, voted) if v], shape)
    num_voters = sum(voted)
    consensus = majority if num_voters >= min_correct and num_voters > 0 else None

    members = []
    for fp, ok, mask, did_vote in zip(footprints, flags, masks, voted):
        case, iou, reward = score_footprint(ok, mask, consensus, eta=eta, no_look_reward=no_look_reward)
        looks = tuple(_look_credit(look, image_size, grid, consensus) for look in fp.looks)
        members.append(TrajectoryCredit(ok, bool(mask.any()), did_vote, case, iou, reward, fp.final_step, looks))
    return ConsensusCredit(tuple(members), consensus, votes, num_voters, shape, float(eta), int(min_correct), voters)


def batch_consensus_credit(
    batch: Sequence[EpisodeLike],
    *,
    correct: Sequence[bool] | None = None,
    **settings: Any,
) -> list[TrajectoryCredit]:
    """CCA over a flat batch holding the groups of several samples: one group per ``sample_id``.

    For trainers whose reward functions see a whole batch (TRL's ``reward_funcs``): members
    are grouped by their sample id, :func:`consensus_credit` runs once per group with
    ``settings`` (``eta``, ``min_correct``, ``grid``, ``voters``, ``no_look_reward``), and the
    credits come back in the batch's order. Every member needs a sample id.
    """
    footprints = [read_footprint(member) for member in batch]
    flags = _correct_flags(footprints, correct)
    groups: dict[str, list[int]] = {}
    for i, fp in enumerate(footprints):
        if not fp.sample_id:
            raise ValueError(f"batch member {i} has no sample_id; group it yourself and call consensus_credit")
        groups.setdefault(fp.sample_id, []).append(i)
    out: list[TrajectoryCredit | None] = [None] * len(footprints)
    for indices in groups.values():
        credit = consensus_credit([batch[i] for i in indices], correct=[flags[i] for i in indices], **settings)
        for i, member in zip(indices, credit.members):
            out[i] = member
    return out  # type: ignore[return-value]


def _look_credit(look, image_size, grid, consensus) -> LookCredit:
    if look.box is None or consensus is None:
        return LookCredit(look.step, look.view, look.box.as_list() if look.box else None, None, None)
    mask = footprint_mask([look.box], image_size, grid)
    return LookCredit(look.step, look.view, look.box.as_list(), mask_iou(mask, consensus),
                      mask_overlap(mask, consensus))


def _correct_flags(footprints: list[Footprint], correct: Sequence[bool] | None) -> list[bool]:
    if correct is None:
        return [fp.correct for fp in footprints]
    if isinstance(correct, (str, bytes)) or len(correct) != len(footprints):
        raise ValueError(f"correct must hold one flag per trajectory ({len(footprints)}), got {correct!r}")
    return [bool(c) for c in correct]


def _same_image(footprints: list[Footprint]) -> tuple[int, int]:
    ids = {fp.sample_id for fp in footprints if fp.sample_id}
    if len(ids) > 1:
        raise ValueError(f"a CCA group is one sample's trajectories, got samples {sorted(ids)}; "
                         "split the batch into one group per sample first")
    sizes = {fp.image_size for fp in footprints}
    if len(sizes) > 1:
        raise ValueError(f"a CCA group shares one image, got image sizes {sorted(sizes)}")
    return sizes.pop()


def _check_settings(eta: float, min_correct: int, voters: str, no_look_reward: float) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta < 1.0:
        raise ValueError(f"eta is an IoU threshold in [0, 1), got {eta!r}")
    if isinstance(min_correct, bool) or not isinstance(min_correct, int) or min_correct < 1:
        raise ValueError(f"min_correct must be an integer >= 1, got {min_correct!r}")
    if voters not in VOTERS:
        raise ValueError(f"voters must be one of {VOTERS}, got {voters!r}")
    if isinstance(no_look_reward, bool) or not isinstance(no_look_reward, (int, float)) \
            or not math.isfinite(no_look_reward):
        raise ValueError(f"no_look_reward must be a finite number, got {no_look_reward!r}")


__all__ = [
    "AGREE_REWARD",
    "DEFAULT_ETA",
    "DEFAULT_MIN_CORRECT",
    "LOOKED_REWARD",
    "VOTERS",
    "Case",
    "ConsensusCredit",
    "LookCredit",
    "TrajectoryCredit",
    "batch_consensus_credit",
    "consensus_credit",
    "majority_mask",
    "score_footprint",
]
