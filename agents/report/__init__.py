"""The HTML trajectory report: what an agent did, read from the trajectory records a run already wrote.

``medvr report RUN_DIR [RUN_B]`` (and, by default, the end of ``medvr run`` and ``medvr eval``)
writes one self-contained HTML file: images embedded as small data URIs, no network, opens
from disk. It shows

- a summary: accuracy overall / closed / open, by question type, organ and modality, tool
  use, grounding mIoU, and plots (accuracy by question type, zooms per episode, grounding
  IoU, entropy before and after looking, learning curves of ``metrics.jsonl`` if present);
- the episodes, filterable and paginated: the original with every view's box numbered
  (colours of :func:`medvr_env.render.view_box_colour`, as in ``env.render()``) and the
  evaluation boxes dashed, the views the agent saw, each turn's text with think / tool call
  / answer highlighted, feedback and error codes, the entropy channel, reward terms, grade;
- groups of rollouts (records with a ``group`` field, see :mod:`agents.report.groups`):
  footprints, the CCA consensus (:mod:`agents.credit`), each member's IoU and tool reward,
  the branch tree;
- two runs side by side: the same questions matched by sample id, what changed.

Torch-free: it needs only the core dependencies.
"""

from .build import DEFAULT_MAX_EPISODES, ReportOptions, ReportResult, build_report, default_output
from .records import ReportInputError

__all__ = ["DEFAULT_MAX_EPISODES", "ReportInputError", "ReportOptions", "ReportResult", "build_report",
           "default_output"]
