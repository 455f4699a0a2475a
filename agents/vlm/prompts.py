"""Chat prompts for the VLM policy, rendered with the checkpoint's own chat template.

The conversation is a list of chat messages: a system message describing the enabled tools (rendered from their
schemas by :func:`medvr_env.render_system_prompt`), a user message with view 0 and the question, then alternating
assistant turns (the model's raw output, which is the env's text action) and user turns holding the tool result:
the env's feedback and, when the tool made one, the new view as an image.

Generated tokens are never re-tokenised. The conversation's token sequence is built from *pieces*: the template is
rendered with a unique sentinel in place of each assistant message, and the text after a sentinel, up to the next
generation prompt, is what the env side inserts (the close of the previous assistant turn, the next user turn, the
generation prompt). Generated ids go where the sentinels were. This keeps the model's own tokens exact (no
retokenisation drift, trl#5224) and works with any chat template that renders every turn; a template that drops or
reorders earlier turns is reported, not silently worked around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from medvr_env.protocol import render_system_prompt

SENTINEL = "\u2063MEDVR-ASSISTANT-{}\u2063"
_SENTINEL_RE = re.compile("\u2063MEDVR-ASSISTANT-(\\d+)\u2063")


class TemplateError(RuntimeError):
    """The chat template cannot be used for incremental multi-turn prompts."""


@dataclass(frozen=True)
class PromptStyle:
    """Wording of the env's turns (the system prompt comes from the tool schemas).

    Attributes:
        view_label: Text after each image; ``{index}``, ``{width}``, ``{height}`` are filled in. The size is the
            one the model was shown (the frame of ``"pixel"`` boxes).
        tool_result_open / tool_result_close: Wrap the env's feedback and new image in the tool-result turn.
        evicted: Replaces an image evicted by the image budget.
        extra_system: Appended to the system prompt.
        compact_tools: List the tools as one-line signatures instead of JSON schemas (see
            :func:`medvr_env.render_system_prompt`); a family adapter turns it on for models trained that way.
    """

    view_label: str = "(view {index}, {width}x{height} pixels)"
    tool_result_open: str = "<tool_response>\n"
    tool_result_close: str = "\n</tool_response>"
    evicted: str = (
        "[view {index}: image removed to stay within the image budget; relook at view {index} to see it again]"
    )
    extra_system: str = ""
    compact_tools: bool = False


def system_prompt(tools: Sequence[type], bbox_format: str, style: PromptStyle = PromptStyle()) -> str:
    text = render_system_prompt(tools, bbox_format, compact=style.compact_tools)
    return f"{text}\n{style.extra_system}" if style.extra_system else text


def question_text(question: str, options: str) -> str:
    text = f"Question: {question}"
    if options:
        text += f"\nOptions:\n{options}"
    return text


def image_item(slot: int) -> dict[str, Any]:
    """A message content item for image ``slot`` of the conversation."""
    return {"type": "image", "medvr_slot": slot}


def text_item(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class ChatRenderer:
    """Renders message lists with the processor's chat template and splits them into env-side pieces."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", processor)
        self.template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        if not self.template:
            raise TemplateError(
                f"{type(processor).__name__} has no chat template; pass one with "
                "VLMPolicy(..., chat_template=...) or save chat_template.jinja next to the checkpoint"
            )
        self.merge_system: bool | None = None  # decided on first render

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        msgs = [_clean(m) for m in messages]
        if self.merge_system is None:
            try:
                out = self._apply(msgs, add_generation_prompt)
                system = msgs[0]["content"][0]["text"] if msgs and msgs[0]["role"] == "system" else ""
                self.merge_system = bool(system) and system[:40] not in out
                if not self.merge_system:
                    return out
            except Exception:  # noqa: BLE001 - a template without a system role raises; merge it into the user turn
                self.merge_system = True
        if self.merge_system and msgs and msgs[0]["role"] == "system":
            system = msgs[0]["content"]
            first = dict(msgs[1])
            first["content"] = [text_item(system[0]["text"] + "\n\n"), *first["content"]]
            msgs = [first, *msgs[2:]]
        return self._apply(msgs, add_generation_prompt)

    def _apply(self, msgs: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        apply = getattr(self.processor, "apply_chat_template", None)
        return apply(msgs, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=self.template)

    def pieces(self, messages: list[dict[str, Any]]) -> list[str]:
        """The env-side text before each assistant turn and after the last: ``len(assistant turns) + 1`` pieces.

        Piece ``i`` is what the template renders, with the generation prompt, for the conversation up to the user
        turn before assistant turn ``i``, after assistant turn ``i - 1``. Taking every piece from a rendering that
        ends with the generation prompt keeps the sequence equal to what the model saw when it generated (some
        templates render a finished assistant turn with a different opening, e.g. ``"ASSISTANT: "`` after a
        ``"ASSISTANT:"`` prompt). Assistant messages hold :data:`SENTINEL` text numbered from 0.
        """
        cuts = [i for i, m in enumerate(messages) if m["role"] == "assistant"] + [len(messages)]
        pieces = []
        for turn, cut in enumerate(cuts):
            text = self.render(messages[:cut], add_generation_prompt=True)
            found = _SENTINEL_RE.findall(text)
            if [int(n) for n in found] != list(range(turn)):
                raise TemplateError(
                    "the chat template dropped or reordered earlier assistant turns; multi-turn prompts need a "
                    "template that renders every turn"
                )
            pieces.append(text.split(SENTINEL.format(turn - 1))[-1] if turn else text)
        return pieces


def assistant_message(turn: int) -> dict[str, Any]:
    return {"role": "assistant", "content": [text_item(SENTINEL.format(turn))]}


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    """Drop MedVR's bookkeeping keys so templates only see standard content items."""
    content = message["content"]
    if isinstance(content, str):
        return message
    return {"role": message["role"], "content": [
        {"type": "image"} if c.get("type") == "image" else {"type": "text", "text": c["text"]} for c in content
    ]}


__all__ = [
    "ChatRenderer",
    "PromptStyle",
    "SENTINEL",
    "TemplateError",
    "assistant_message",
    "image_item",
    "question_text",
    "system_prompt",
    "text_item",
]
