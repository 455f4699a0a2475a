"""MedVR environments: medical visual question answering where agents zoom, crop and look again.

``import medvr_env`` registers every id in ``envs_registry.yaml``::

    import gymnasium as gym
    import medvr_env  # noqa: F401

    env = gym.make("MedVR-VQA-v0")

In subprocess workers use the prefixed form ``gym.make("medvr_env:MedVR-VQA-v0")``.
"""

from .boxes import BBOX_FORMATS, Box
from .data.sample import Sample, VQADataset
from .env import EnvSnapshot, MedVRVQAEnv
from .episode import Episode, StepRecord, View
from .errors import ActionError, ErrorCode, ToolError
from .protocol import ToolCall, parse_action_text, render_system_prompt, render_tool_call
from .registration import register_envs
from .tools import Tool, ToolContext, ToolResult, register_tool, registered_tools

__version__ = "0.1.0"

ENV_IDS: list[str] = register_envs()

__all__ = [
    "BBOX_FORMATS",
    "ENV_IDS",
    "ActionError",
    "Box",
    "EnvSnapshot",
    "Episode",
    "ErrorCode",
    "MedVRVQAEnv",
    "Sample",
    "StepRecord",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "VQADataset",
    "View",
    "parse_action_text",
    "register_envs",
    "register_tool",
    "registered_tools",
    "render_system_prompt",
    "render_tool_call",
]
