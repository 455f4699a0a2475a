"""TextActions: declare the text protocol as the action space (the VLM path)."""

from __future__ import annotations

import gymnasium as gym
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

from ..text import CHARSET


class TextActions(gym.Wrapper, RecordConstructorArgs):
    """Make the action space ``Text`` so trainers and checkers see the protocol path.

    The env already accepts protocol text in ``step``; this wrapper only changes the
    declared space (so ``action_space.sample()`` yields strings, which the tolerant
    parser turns into error codes, never exceptions). Actions may also be dicts
    ``{"text": ..., "entropy": ...}`` to report the policy's uncertainty.

    ``max_length`` only bounds what ``action_space.sample()`` draws; the env itself
    accepts texts up to its ``max_action_chars`` (8,192 by default) and answers
    longer ones with ``text_too_long``.
    """

    def __init__(self, env: gym.Env, max_length: int = 1024) -> None:
        RecordConstructorArgs.__init__(self, max_length=max_length)
        gym.Wrapper.__init__(self, env)
        self.action_space = spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)
