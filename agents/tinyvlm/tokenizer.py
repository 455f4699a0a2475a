"""The tiny VLM's tokenizer: a byte-level BPE trained locally on MedVR's own text.

Trained (in about a second) on the training questions and answers (VQA-RAD train when the data is there, the
procedural train split), the system prompts and turn wording the VLM policy renders, tool calls with boxes, and the
env's tool feedback. Digits are split one per token, so every box coordinate is spelled the same way digit by digit
(0-1000 integers take at most four tokens) instead of depending on which numbers happened to be frequent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from .processing import CHAT_TEMPLATE, IMAGE_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, TURN_END

log = logging.getLogger(__name__)

NO_TOOLS = ("think", "answer")


def protocol_texts(seed: int = 0) -> list[str]:
    """System prompts (every box format; all tools and answer-only), turn wording, tool calls and env feedback."""
    from agents.vlm.prompts import PromptStyle, question_text, system_prompt
    from medvr_env.protocol import render_tool_call
    from medvr_env.tools import DEFAULT_TOOLS, resolve_tool

    style = PromptStyle()
    texts = []
    for tools in (DEFAULT_TOOLS, NO_TOOLS):
        classes = [resolve_tool(t) for t in tools]
        texts += [system_prompt(classes, fmt, s) for fmt in ("norm1000", "norm", "pixel")
                  for s in (style, replace(style, compact_tools=True))]
    texts += [style.view_label.format(index=i, width=224, height=224) for i in range(8)]
    texts += [style.tool_result_open, style.tool_result_close] + [style.evicted.format(index=i) for i in range(8)]
    texts.append(question_text("Which option?", "A. left\nB. right\nC. upper\nD. lower"))
    rng = np.random.default_rng(seed)
    for _ in range(300):
        x1, y1 = rng.integers(0, 750, size=2)
        w, h = rng.integers(150, 500, size=2)
        box = [int(x1), int(y1), int(min(1000, x1 + w)), int(min(1000, y1 + h))]
        texts.append(render_tool_call("zoom", {"bbox_2d": box}))
        texts.append(render_tool_call("crop", {"bbox_2d": box, "source": int(rng.integers(0, 3))}))
    texts += [render_tool_call("relook", {"view": i}) for i in range(4)]
    texts += env_feedback_texts()
    return texts


def env_feedback_texts() -> list[str]:
    """What the env writes back for tool calls and bad actions (from a few real steps)."""
    from medvr_env import MedVRVQAEnv
    from medvr_env.data.procedural import ProceduralDataset

    env = MedVRVQAEnv(dataset=ProceduralDataset(split="train", num_samples=4), bbox_format="norm1000")
    actions = [
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [100, 200, 400, 500]}}</tool_call>',
        '<tool_call>{"name": "crop", "arguments": {"bbox_2d": [0, 0, 500, 500], "source": 0}}</tool_call>',
        '<tool_call>{"name": "relook", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [900, 900, 100, 100]}}</tool_call>',
        "<tool_call>{bad json</tool_call>",
        "no tags here",
    ]
    texts = []
    for episode in range(2):
        env.reset(seed=episode)
        for action in actions:
            _, _, term, trunc, _ = env.step({"text": action})
            texts.append(env.episode.steps[-1].feedback)
            if term or trunc:
                break
    env.close()
    return [t for t in texts if t]


def dataset_texts(vqa_rad_root: str | None = None, procedural_samples: int = 2000) -> list[str]:
    """Training questions, answers and options: VQA-RAD train (skipped, with a log line, if absent) and procedural."""
    from medvr_env.data.files import DatasetNotFoundError
    from medvr_env.data.procedural import ProceduralDataset
    from medvr_env.data.sample import format_options
    from medvr_env.data.vqa_rad import VQARADDataset

    from .sft_data import answer_text

    texts = []
    try:
        rad = VQARADDataset(split="train", data_root=vqa_rad_root)
        texts += [t for s in rad.samples for t in (s.question, f"<answer>{answer_text(s)}</answer>")]
    except DatasetNotFoundError as exc:
        log.info("tokenizer without VQA-RAD text: %s", str(exc).splitlines()[0])
    proc = ProceduralDataset(split="train", num_samples=procedural_samples)
    for i in range(len(proc)):
        s = proc[i]
        texts += [s.question, f"<answer>{answer_text(s)}</answer>", format_options(s.options)]
    return [t for t in texts if t]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 3000):
    """A ``PreTrainedTokenizerFast`` (ChatML special tokens, the chat template) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(list(texts), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=TURN_END, pad_token=PAD_TOKEN,
                                  additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD_TOKEN, TURN_END)])
    tok.image_token = IMAGE_TOKEN
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tokenizer(vqa_rad_root: str | None = None, procedural_samples: int = 2000, vocab_size: int = 3000,
                    extra_texts: Sequence[str] = ()):
    """The tokenizer of a new model: :func:`train_tokenizer` on protocol and training-question text."""
    texts = protocol_texts() * 3 + dataset_texts(vqa_rad_root, procedural_samples) + list(extra_texts)
    return train_tokenizer(texts, vocab_size)


__all__ = ["build_tokenizer", "dataset_texts", "env_feedback_texts", "protocol_texts", "train_tokenizer"]
