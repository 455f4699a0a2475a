"""Write your own MedVR tool: a window/level (contrast) tool, added from outside the package.

A tool is a class with a name, a description, a JSON schema for its arguments and an
``apply(episode, args, ctx)`` method. ``@register_tool`` makes it available to the env,
the text protocol, the prompt and the structured action space. This one re-renders a
view with a new intensity window, the radiologist's first move on a CT or X-ray.

Run it:  python examples/custom_tool.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import medvr_env
from medvr_env import Tool, ToolResult, register_tool

PRESETS = {"soft_tissue": (128, 160), "bone": (190, 110), "lung": (70, 120), "high_contrast": (128, 64)}


@dataclass(frozen=True)
class WindowLevel:
    """A pixel filter: map [center - width/2, center + width/2] to [0, 255]. Child views inherit it."""

    center: float
    width: float

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        low = self.center - self.width / 2
        out = (pixels.astype(np.float32) - low) * (255.0 / self.width)
        return np.clip(out, 0, 255).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        return {"filter": "window_level", "center": self.center, "width": self.width}


@register_tool
class WindowLevelTool(Tool):
    name = "window"
    description = "Change the intensity window (contrast) of a view, like window/level on a radiology workstation."
    parameters = {
        "type": "object",
        "properties": {
            "preset": {"type": "string", "enum": sorted(PRESETS), "x-medvr-role": "text",
                       "description": "A named window."},
            "center": {"type": "number", "minimum": 0, "maximum": 255, "description": "Window centre (overrides preset)."},
            "width": {"type": "number", "minimum": 1, "maximum": 255, "description": "Window width (overrides preset)."},
            "view": {"type": "integer", "minimum": 0, "x-medvr-role": "view", "description": "View to re-window."},
        },
        "required": [],
    }

    def apply(self, episode, args, ctx) -> ToolResult:
        center, width = PRESETS[args.get("preset", "soft_tissue")]
        center, width = args.get("center", center), args.get("width", width)
        source = episode.views[args.get("view", episode.current_view)]
        view = episode.add_view(source.box, source.size, source.index, self.name,
                                (*source.filters, WindowLevel(center, width)))
        return ToolResult(feedback=f"Window {center:g}/{width:g} on view {source.index}: view {view.index}.", view=view)


def main() -> None:
    tools = ["think", "zoom", "crop", "relook", "window", "answer"]
    env = gym.make("MedVR-VQA-v0", tools=tools, render_mode="ansi")

    # Text path: what a VLM would write. The prompt already lists the new tool.
    env.reset(seed=0)
    prompt = medvr_env.render_system_prompt(env.unwrapped.tools, env.unwrapped.bbox_format)
    print("prompt lists:", next(line for line in prompt.splitlines() if '"name": "window"' in line)[:110], "...")
    for text in [
        '<think>Bones first.</think><tool_call>{"name": "window", "arguments": {"preset": "bone"}}</tool_call>',
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0.25, 0.25, 0.75, 0.75]}}</tool_call>',
        "<answer>yes</answer>",
    ]:
        obs, reward, terminated, truncated, info = env.step(text)
        print(f"  text step -> error={info['error'] or '-'} view={info['view_index']} reward={reward:+.1f}")
    print(env.render())

    # Structured path: the same tool through the Dict action space (preset via `text`).
    env.reset(seed=1)
    window = env.unwrapped.tool_names.index("window")
    obs, reward, terminated, truncated, info = env.step({"tool": window, "view": 0, "text": "lung",
                                                        "bbox": np.zeros(4, np.float32)})
    filters = env.unwrapped.episode.view.filters
    print(f"structured step -> error={info['error'] or '-'} view={info['view_index']} filters={filters}")


if __name__ == "__main__":
    main()
