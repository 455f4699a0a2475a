"""Issue 13: does EVR + CCA teach a small VLM where to look, without a single box label?

One grid of GRPO runs (six arms x seeds, equal budget of generated tokens, one warm start), evaluated on the
procedural test split and aggregated over seeds. See ``experiments/evr_cca/README.md``.

Modules:
    arms: the six arms as overrides of ``base.yaml``; writes one YAML per arm.
    rewards: the box-supervised tool reward (arm 6 only) and the zero-weight grounding probe (logged, never rewarded).
    grounding: grounding measures of a footprint against the evaluation boxes.
    budget: the equal-token-budget stop (a trainer callback).
    train_run: one (arm, seed) run: GRPO to the token budget, then evaluation; atomic result file.
    evaluate: batched greedy evaluation of a checkpoint on the procedural test split.
    aggregate: mean and t-interval over seeds, the Markdown table, the learning-curve PNG.
    run_grid: the command that runs everything, resumably, ``--jobs`` at a time.
"""
