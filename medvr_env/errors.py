"""Error codes for actions the env could not carry out.

Every malformed action maps to exactly one code. The code goes to ``info["error"]``,
a short message to the next observation's ``feedback`` text, and a format penalty to
``info["reward_terms"]["format"]``. The env never raises on an agent's action.

Messages are cut to :data:`MAX_MESSAGE_CHARS` characters, so an error can always be shown
to the agent and stored in the episode record.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_MESSAGE_CHARS = 512


class ErrorCode(str, Enum):
    """Why an action was rejected. Values are stable strings (safe to log and compare)."""

    # Any action path
    TEXT_TOO_LONG = "text_too_long"  # over max_action_chars: the text, or the JSON text of a dict action
    NESTED_TOO_DEEP = "nested_too_deep"  # lists / dicts nested deeper than medvr_env.bounded.MAX_NESTING
    NOT_JSON = "not_json"  # a value JSON cannot carry: a non-string dict key, bytes, a set, an object
    # The text protocol
    EMPTY_ACTION = "empty_action"
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
    BAD_VIEW_SIZES = "bad_view_sizes"  # "view_sizes" of a text or call dict is not {view index: [width, height]}
    TOOL_FAILED = "tool_failed"
    MALFORMED_ACTION = "malformed_action"


@dataclass(frozen=True)
class ActionError:
    """A rejected action: the code, and a message short enough to show the agent."""

    code: ErrorCode
    message: str

    def __post_init__(self) -> None:
        if len(self.message) > MAX_MESSAGE_CHARS:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE_CHARS - 3] + "...")

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
