"""Error codes for actions the env could not carry out.

Every malformed action maps to exactly one code. The code goes to ``info["error"]``,
a short message to the next observation's ``feedback`` text, and a format penalty to
``info["reward_terms"]["format"]``. The env never raises on an agent's action.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ErrorCode(str, Enum):
    """Why an action was rejected. Values are stable strings (safe to log and compare)."""

    # The text protocol
    EMPTY_ACTION = "empty_action"
    TEXT_TOO_LONG = "text_too_long"
    NO_ACTION_TAG = "no_action_tag"
    UNCLOSED_TAG = "unclosed_tag"
    TOOL_CALL_AND_ANSWER = "tool_call_and_answer"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TOOL_NAME = "missing_tool_name"
    UNKNOWN_TOOL = "unknown_tool"
    # Arguments (both action paths)
    BAD_ARGUMENTS = "bad_arguments"
    MISSING_ARGUMENT = "missing_argument"
    UNKNOWN_ARGUMENT = "unknown_argument"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    NON_FINITE = "non_finite"
    # Boxes
    INVERTED_BOX = "inverted_box"
    DEGENERATE_BOX = "degenerate_box"
    ABSURD_ASPECT = "absurd_aspect"
    BOX_OUTSIDE_VIEW = "box_outside_view"
    # Views and tools
    BAD_VIEW_INDEX = "bad_view_index"
    TOOL_FAILED = "tool_failed"
    MALFORMED_ACTION = "malformed_action"


@dataclass(frozen=True)
class ActionError:
    """A rejected action: the code, and a message short enough to show the agent."""

    code: ErrorCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class ToolError(Exception):
    """Raised inside a tool's ``apply`` to reject a call with a specific code.

    The env turns it into an :class:`ActionError`; any other exception from a tool
    becomes ``TOOL_FAILED`` with the exception text, so a buggy user tool cannot
    crash a training run.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = ActionError(code, message)
