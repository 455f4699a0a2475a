"""The tool plugin API as a user meets it: a tool defined and registered here, used through both action paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from medvr_env import Tool, ToolResult, register_tool, render_system_prompt
from medvr_env.tools import registered_tools, resolve_tool

from .helpers import make_env


@dataclass(frozen=True)
class Invert:
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return 255 - pixels

    def describe(self) -> dict:
        return {"filter": "invert"}


@register_tool
class InvertTool(Tool):
    name = "invert"
    description = "Invert the grey levels of a view (bright becomes dark)."
    parameters = {
        "type": "object",
        "properties": {"view": {"type": "integer", "minimum": 0, "x-medvr-role": "view"}},
        "required": [],
    }

    def apply(self, episode, args, ctx):
        src = episode.views[args.get("view", episode.current_view)]
        view = episode.add_view(src.box, src.size, src.index, self.name, (*src.filters, Invert()))
        return ToolResult(feedback=f"inverted view {src.index}", view=view)


TOOLS = ["think", "zoom", "invert", "answer"]


def test_user_tool_through_text_path():
    env = make_env(tools=TOOLS)
    obs0, _ = env.reset(seed=0, options={"index": 0})
    obs, reward, term, trunc, info = env.step('<tool_call>{"name": "invert", "arguments": {"view": 0}}</tool_call>')
    assert info["error"] == "" and info["view_index"] == 1
    np.testing.assert_array_equal(obs["image"], 255 - obs0["image"])
    np.testing.assert_array_equal(info["views"][0], 255 - env.episode.render_view(0))
    # a zoom of the inverted view inherits the filter
    obs, *_ , info = env.step('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5]}}</tool_call>')
    assert [f.describe() for f in env.episode.view.filters] == [{"filter": "invert"}]


def test_user_tool_through_structured_path():
    env = make_env(tools=TOOLS)
    obs0, _ = env.reset(seed=0, options={"index": 0})
    action = {"tool": env.tool_names.index("invert"), "bbox": np.zeros(4, np.float32), "view": 0, "text": ""}
    obs, reward, term, trunc, info = env.step(action)
    assert info["error"] == "" and env.episode.view.tool == "invert"
    np.testing.assert_array_equal(obs["image"], 255 - obs0["image"])
    bad = dict(action, view=5)
    *_, info = env.step(bad)
    assert info["error"] == "bad_view_index"


def test_user_tool_in_prompt_and_registry():
    assert "invert" in registered_tools()
    prompt = render_system_prompt([resolve_tool(t) for t in TOOLS], "norm")
    assert '"name": "invert"' in prompt and "x-medvr-role" not in prompt
    env = make_env(tools=TOOLS)
    assert env.action_space["tool"].n == 4


def test_registering_conflicting_names_and_bad_classes():
    with pytest.raises(ValueError, match="already registered"):

        @register_tool
        class Impostor(Tool):
            name = "zoom"
            description = "not the real zoom"

    with pytest.raises(TypeError, match="description"):

        @register_tool
        class Nameless(Tool):
            name = "nameless"

    with pytest.raises(ValueError, match="unknown tool"):
        make_env(tools=["think", "teleport", "answer"])
    with pytest.raises(ValueError, match="no terminal tool"):
        make_env(tools=["think", "zoom"])


def test_tool_given_as_import_path():
    env = make_env(tools=["zoom", "tests.test_tools:InvertTool", "answer"])
    assert env.tool_names == ("zoom", "invert", "answer")
