"""MedVR on verl 0.9.1: tools, EVR branching and the CCA reward where verl sees whole groups.

Pieces (import the one you need; nothing here is imported by ``agents`` or ``medvr_env``):

- :mod:`.settings`: the ``medvr:`` section of a verl config (env, policy, EVR, CCA, rewards, entropy), read into
  the same dataclasses as ``medvr train`` (:mod:`agents.train.config`). verl-free.
- :mod:`.session`: one MedVR trajectory played through any async token generator: our chat rendering and tool
  protocol (:class:`agents.vlm.conversation.Conversation`), the env's tools producing images in placeholder order,
  the generated-token mask; its own env per trajectory. verl-free.
- :mod:`.group`: the EVR group (independent sessions, then branches forked at the coordinate tokens with the shared
  prefix) and each member's reward with CCA over the group. verl-free.
- :mod:`.entropy`: per-token normalised entropy from top-k log-probs, or the sampled token's surprisal (fallback).
- :mod:`.agent_loop`: ``MedVRAgentLoop``, verl's ``AgentLoopBase`` registered as ``"medvr"``.
- :mod:`.worker`: ``MedVRAgentLoopWorker`` (per-prompt hook ``_run_prompt`` building the EVR group) and
  ``MedVRAgentLoopManager`` (``+actor_rollout_ref.rollout.agent.agent_loop_manager_class``).
- :mod:`.replica`: a vLLM rollout replica that also returns top-k log-probs, registered in verl's replica registry.
- :mod:`.main`: ``python -m agents.integrations.verl.main`` (verl's ``main_ppo`` with the replica registered in the
  trainer's process) and :mod:`.data` (the prompt parquet verl's dataset reads).
"""
