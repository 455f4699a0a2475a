"""MedVRVQAEnv: answer a medical visual question, looking closer with tools first."""

from __future__ import annotations

import dataclasses

import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import render as rendering
from .bounded import MAX_NESTING, bound, json_safe, preview
from .boxes import box_from_agent, check_format
from .data.registry import make_dataset
from .data.sample import VQADataset, format_options
from .entropy import make_estimator
from .episode import Episode, StepRecord
from .errors import MAX_MESSAGE_CHARS, ActionError, ErrorCode, ToolError
from .grading import grade_answer
from .protocol import DEFAULT_MAX_CHARS, ToolCall, call_from_object, parse_action_text
from .text import CHARSET, normalize_text
from .tools import DEFAULT_TOOLS, Tool, ToolContext, ToolResult, resolve_tool, validate_arguments

MAX_OPTIONS_LENGTH = 1024
MAX_FEEDBACK_LENGTH = 256
STRUCTURED_TEXT_LENGTH = 64
MAX_VIEW_SIZE_SIDE = 1 << 16
"""Largest width or height a policy may report in ``view_sizes``."""

UNCERTAINTY_KEYS = ("entropy", "tool_entropy", "token_entropies")
METADATA_KEYS = frozenset((*UNCERTAINTY_KEYS, "view_sizes"))
"""Keys of a text or call dict that report on the action rather than being it (outside the length limit)."""


@dataclass(frozen=True)
class EnvSnapshot:
    """Everything needed to continue an episode exactly: the episode record and the RNG state."""

    episode: Episode
    rng_state: dict[str, Any]
    sample_index: int


class MedVRVQAEnv(gym.Env[dict[str, Any], Any]):
    """Medical visual question answering where the agent may zoom, crop and look again before answering.

    ## Description

    An episode is one sample: a medical image, a question, optional answer options and a
    reference answer. The agent sees the current view of the image (at first the whole
    image, shrunk to ``obs_size``) and acts with tools: ``think`` (text only), ``zoom`` and
    ``crop`` (a box on any earlier view), ``relook`` (the full image or an earlier view
    again, at full quality) and ``answer`` (terminal, graded). Every step may carry the
    acting policy's uncertainty (normalised entropy), which the observation shows as a
    fixed-length window: the entropy channel.

    ## Action Space

    Three equivalent forms, all checked against the same tool schemas:

    - **structured** (``action_space``, for non-LLM code): ``Dict(tool=Discrete(n_tools),
      bbox=Box(0, 1, (4,)), view=Discrete(max_steps + 1), text=Text(64), entropy=Box(0, 1, (1,)))``.
      ``tool`` indexes ``env.tool_names``; ``bbox`` is ``[x1, y1, x2, y2]`` as fractions
      of the view named by ``view``; ``text`` fills text arguments (think, answer). Omit
      ``entropy`` to let the uncertainty estimator fill the channel.
    - **text** (the VLM path, or the ``TextActions`` wrapper): a string in the protocol
      ``<think>..</think><tool_call>{"name": .., "arguments": {..}}</tool_call>`` or
      ``<answer>..</answer>``, with boxes in ``bbox_format``. To report entropy, pass
      ``{"text": str, "entropy": float, "tool_entropy": float, "token_entropies": [float]}``. A policy that saw
      views at other sizes than delivered (a VLM processor resized them) adds ``"view_sizes": {index: [w, h]}``,
      and ``"pixel"`` boxes are read on those sizes.
    - **call**: ``{"name": "zoom", "arguments": {"bbox_2d": [...], "source": 0}}``, boxes in ``bbox_format``.
      It may carry the same ``entropy``, ``tool_entropy``, ``token_entropies`` and ``view_sizes`` fields.

    Every field is untrusted input, checked before anything else reads it, and a bad one is an
    error code, never an exception (:mod:`medvr_env.bounded`). One length limit holds on every path:
    ``max_action_chars`` (default 8,192) characters of the stripped text, or of the JSON text of a call
    dict or structured action (the uncertainty fields and ``view_sizes`` excepted) -> ``text_too_long``.
    Lists and dicts nest at most 32 levels (``nested_too_deep``); dict keys are strings and values are
    JSON values, numpy scalars or arrays (else ``not_json``); ``view_sizes`` must map existing view
    indices to two whole numbers in [1, 65536] (``bad_view_sizes``). Uncertainty fields that are not a
    finite number (or a list of at most ``max_action_chars`` of them) count as not reported.

    ## Observation Space

    A flat ``Dict``: ``image`` (``obs_size`` x ``obs_size`` x 3 uint8, the current view),
    ``question``, ``options`` (``"A. ..\\nB. .."`` or empty) and ``feedback`` (the last
    tool result or error message) as ``Text`` over :data:`medvr_env.text.CHARSET`,
    ``entropy`` (the last ``entropy_window`` values, oldest first, zero-padded on the
    left) with ``entropy_mask`` (1 where a value was known), ``view_box`` (the current
    view's box as fractions of the original) and ``step``.

    ## Rewards

    Named terms in ``info["reward_terms"]``; the reward is their sum. ``accuracy``: 1 for a
    correct answer (deterministic grading), else 0. ``format``: ``format_penalty`` for an
    invalid action. ``cost``: ``-step_cost`` per step. ``tool``: 0 here; credit-assignment
    wrappers fill it.

    ## Starting State

    A sample drawn with ``self.np_random`` (or ``options={"index": i}``); view 0 is the
    whole image.

    ## Episode End

    Terminated when the agent answers. Truncated after ``max_steps`` steps or
    ``max_consecutive_errors`` invalid actions in a row. ``info["stop_reason"]`` says which.

    ## Info

    ``views`` (full-resolution arrays of the views this step produced, if
    ``return_views``), ``view_index``, ``num_views``, ``error`` / ``error_message``,
    ``reward_terms``, ``stop_reason``, ``action_mask`` (per tool, for ``env.tool_names``),
    ``is_success``, ``applied_box``, ``entropy`` (``None`` when unknown), ``answer``, ``sample_id``.

    ## Arguments

    ``dataset`` (registered name, import path or instance), ``split``, ``dataset_kwargs``
    (anything else the dataset takes, such as SLAKE's ``language``), and the selection kwargs
    passed on to the dataset when given: ``data_root`` (else ``$MEDVR_DATA/<dataset>``),
    ``num_samples``, ``start_index``, ``question_types``, ``answer_types`` (``"closed"``/``"open"``),
    ``tools``, ``bbox_format`` (``"pixel"`` | ``"norm"`` | ``"norm1000"``), ``obs_size``,
    ``view_size`` (zoom output, longer side), ``max_view_side`` (image budget for crop
    and relook), ``max_steps``, ``max_consecutive_errors``, ``entropy_window``,
    ``uncertainty_estimator``, ``format_penalty``, ``step_cost``, ``min_box_side``,
    ``max_aspect_ratio``, ``max_question_length``, ``max_action_chars``,
    ``return_views``, ``render_mode``.

    ## Version History

    - v0: first release.
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}

    def __init__(
        self,
        dataset: str | VQADataset = "procedural",
        split: str = "train",
        dataset_kwargs: dict[str, Any] | None = None,
        data_root: str | None = None,
        num_samples: int | None = None,
        start_index: int | None = None,
        question_types: str | Sequence[str] | None = None,
        answer_types: str | Sequence[str] | None = None,
        tools: Sequence[str | type[Tool]] = DEFAULT_TOOLS,
        bbox_format: str = "norm",
        obs_size: int = 224,
        view_size: int = 448,
        max_view_side: int = 1024,
        max_steps: int = 8,
        max_consecutive_errors: int = 3,
        entropy_window: int = 8,
        uncertainty_estimator: Any = None,
        format_penalty: float = -0.2,
        step_cost: float = 0.0,
        min_box_side: int = 28,
        max_aspect_ratio: float = 100.0,
        max_question_length: int = 512,
        max_action_chars: int = DEFAULT_MAX_CHARS,
        return_views: bool = True,
        render_mode: str | None = None,
    ) -> None:
        self.bbox_format = check_format(bbox_format)
        for name, value, lo in [
            ("obs_size", obs_size, 36),
            ("view_size", view_size, 28),
            ("max_view_side", max_view_side, 28),
            ("max_steps", max_steps, 1),
            ("max_consecutive_errors", max_consecutive_errors, 1),
            ("entropy_window", entropy_window, 1),
            ("min_box_side", min_box_side, 1),
            ("max_question_length", max_question_length, 16),
        ]:
            if not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not max_aspect_ratio >= 1:
            raise ValueError(f"max_aspect_ratio must be >= 1, got {max_aspect_ratio!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")

        selection = {"data_root": data_root, "num_samples": num_samples, "start_index": start_index,
                     "question_types": question_types, "answer_types": answer_types}
        self.dataset = make_dataset(dataset, split=split, **_merge_dataset_kwargs(dataset_kwargs, selection))
        if len(self.dataset) == 0:
            raise ValueError(f"dataset {getattr(self.dataset, 'name', dataset)!r} split {split!r} has no samples")
        tool_classes = [resolve_tool(t) for t in tools]
        names = [cls.name for cls in tool_classes]
        if len(set(names)) != len(names):
            raise ValueError(f"tools are listed twice: {names}")
        if not any(cls.terminal for cls in tool_classes):
            raise ValueError(f"no terminal tool among {names}: add 'answer' so episodes can end")
        self.tool_names: tuple[str, ...] = tuple(names)
        self._tools: dict[str, Tool] = {cls.name: cls() for cls in tool_classes}
        self._ctx = ToolContext(view_size=view_size, max_view_side=max_view_side, bbox_format=self.bbox_format)

        self.obs_size = obs_size
        self.max_steps = max_steps
        self.max_consecutive_errors = max_consecutive_errors
        self.entropy_window = entropy_window
        self.estimator = make_estimator(uncertainty_estimator)
        self.format_penalty = float(format_penalty)
        self.step_cost = float(step_cost)
        self.min_box_side = min_box_side
        self.max_aspect_ratio = float(max_aspect_ratio)
        self.max_question_length = max_question_length
        self.max_action_chars = max_action_chars
        self.return_views = bool(return_views)
        self.render_mode = render_mode

        text = lambda n, lo=0: spaces.Text(max_length=n, min_length=lo, charset=CHARSET)  # noqa: E731
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (obs_size, obs_size, 3), np.uint8),
                "question": text(max_question_length),
                "options": text(MAX_OPTIONS_LENGTH),
                "feedback": text(MAX_FEEDBACK_LENGTH),
                "entropy": spaces.Box(0.0, 1.0, (entropy_window,), np.float32),
                "entropy_mask": spaces.MultiBinary(entropy_window),
                "view_box": spaces.Box(0.0, 1.0, (4,), np.float32),
                "step": spaces.Discrete(max_steps + 1),
            }
        )
        self.action_space = spaces.Dict(
            {
                "tool": spaces.Discrete(len(self.tool_names)),
                "bbox": spaces.Box(0.0, 1.0, (4,), np.float32),
                "view": spaces.Discrete(max_steps + 1),
                "text": text(STRUCTURED_TEXT_LENGTH),
                "entropy": spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        self._episode: Episode | None = None
        self._sample_index = -1
        self._question = ""
        self._options = ""

    # ------------------------------------------------------------------ API
    @property
    def episode(self) -> Episode:
        """The current episode record (read it; do not modify it)."""
        if self._episode is None:
            raise RuntimeError("no episode yet: call reset() first")
        return self._episode

    @property
    def tools(self) -> list[type[Tool]]:
        """The enabled tool classes, in action-index order."""
        return [type(self._tools[n]) for n in self.tool_names]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "index" in options:
            index = options["index"]
            if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.dataset):
                raise ValueError(f"options['index'] must be an integer in [0, {len(self.dataset)}), got {index!r}")
            index = int(index)
        else:
            index = int(self.np_random.integers(len(self.dataset)))
        sample = self.dataset[index]
        original = self.dataset.load_image(sample)
        self._sample_index = index
        self._episode = Episode.start(sample, original, self._ctx.max_view_side)
        self._question = normalize_text(sample.question, self.max_question_length)
        self._options = normalize_text(format_options(sample.options), MAX_OPTIONS_LENGTH)
        info = self._info(new_views=(0,), error=None, terms={}, answer=None, applied_box=None, entropy=None)
        return self._observation(""), info

    def step(self, action: Any):
        episode = self.episode
        if episode.stop_reason:
            raise RuntimeError(f"the episode has ended ({episode.stop_reason}); call reset() first")

        raw, call, bbox_format, reported, shown, error = self._decode(action)
        entropy, source = self._entropy(reported, episode)
        result = ToolResult()
        if error is None:
            tool = self._tools[call.name]
            args, error = validate_arguments(type(tool), call.arguments)
            if error is None:
                result, error = self._apply(tool, args, bbox_format, episode, shown)

        terms = {"accuracy": 0.0, "format": 0.0, "tool": 0.0, "cost": -self.step_cost}
        grade = None
        if error is not None:
            terms["format"] = self.format_penalty
        elif result.answer is not None:
            sample = episode.sample
            grade = grade_answer(result.answer, sample.answer, options=sample.options, answer_type=sample.answer_type)
            terms["accuracy"] = float(grade.score)
        feedback = f"Error ({error.code.value}): {error.message}" if error else result.feedback
        episode.steps.append(
            _record(episode, raw, call, error, result, entropy, source, reported, terms, feedback,
                    self.max_action_chars)
        )

        terminated = result.answer is not None
        truncated = False
        if terminated:
            episode.stop_reason = "answered"
            episode.grade = {
                "correct": grade.correct,
                "score": grade.score,
                "method": grade.method,
                "predicted": grade.predicted,
                "recall": grade.recall,
            }
        elif episode.consecutive_errors >= self.max_consecutive_errors:
            truncated, episode.stop_reason = True, "too_many_errors"
        elif episode.num_steps >= self.max_steps:
            truncated, episode.stop_reason = True, "max_steps"

        new_views = (result.view.index,) if result.view is not None else ()
        info = self._info(new_views, error, terms, result.answer, result.applied_box, entropy)
        return self._observation(feedback), float(sum(terms.values())), terminated, truncated, info

    def render(self):
        if self.render_mode == "rgb_array":
            return rendering.render_rgb(self.episode)
        if self.render_mode == "ansi":
            return rendering.render_ansi(self.episode)
        return None

    def set_bbox_format(self, bbox_format: str) -> None:
        """Read boxes in actions as ``bbox_format`` from now on (a policy declares its model's convention)."""
        self.bbox_format = check_format(bbox_format)
        self._ctx = dataclasses.replace(self._ctx, bbox_format=self.bbox_format)

    def action_masks(self) -> np.ndarray:
        """Which tools make sense now (1) per ``tool_names``; only terminal tools on the last step."""
        episode = self.episode
        last_step = episode.num_steps >= self.max_steps - 1
        return np.array(
            [
                int(tool.is_available(episode) and (tool.terminal or not last_step))
                for tool in (self._tools[n] for n in self.tool_names)
            ],
            dtype=np.int8,
        )

    def snapshot(self) -> EnvSnapshot:
        """Capture the episode and RNG so :meth:`restore` continues exactly from here (EVR forks use this)."""
        return EnvSnapshot(self.episode.snapshot(), dict(self.np_random.bit_generator.state), self._sample_index)

    def restore(self, snap: EnvSnapshot) -> None:
        """Continue from a snapshot taken on this env or on one built with the same arguments."""
        self._episode = snap.episode.snapshot()
        self.np_random.bit_generator.state = snap.rng_state
        self._sample_index = snap.sample_index
        sample = self._episode.sample
        self._question = normalize_text(sample.question, self.max_question_length)
        self._options = normalize_text(format_options(sample.options), MAX_OPTIONS_LENGTH)

    # ------------------------------------------------------------ internals
    def _decode(self, action: Any) -> _Decoded:
        """Turn any accepted action form into a call, checking every field as untrusted input; never raises.

        Past the dispatch below, only plain copies made by :func:`~medvr_env.bounded.bound` are read, so no
        method a policy's objects define (``__eq__``, ``__iter__``, ...) runs inside the env.
        """
        limit = self.max_action_chars
        if isinstance(action, str):
            action = str.__str__(action)
            parsed = parse_action_text(action, self.tool_names, limit)
            return _Decoded(action[:limit], parsed.call, self.bbox_format, {}, {}, parsed.error)
        if isinstance(action, dict):
            if dict.__contains__(action, "name"):
                return self._decode_call(action)
            if dict.__contains__(action, "tool"):
                return self._decode_structured(action)
            if dict.__contains__(action, "text"):
                return self._decode_text_dict(action)
        raw = _dump(json_safe(action, limit))
        error = ActionError(
            ErrorCode.MALFORMED_ACTION, "an action is a structured dict, a tool-call dict or protocol text"
        )
        return _Decoded(raw, None, self.bbox_format, {}, {}, error)

    def _decode_text_dict(self, action: dict[Any, Any]) -> _Decoded:
        """``{"text": ..., "entropy": ..., "view_sizes": ...}``: protocol text with the policy's reports."""
        limit = self.max_action_chars
        reported = _reported_uncertainty(action, limit)
        text = dict.get(action, "text")
        others = bound(action, limit, skip=METADATA_KEYS | {"text"})  # any further keys
        if not isinstance(text, str) or others.error is not None:
            raw = _dump(json_safe(bound(action, limit, skip=METADATA_KEYS).value, limit))
            error = others.error or ActionError(
                ErrorCode.MALFORMED_ACTION, f"'text' must be a string, got {_type_name(text)}"
            )
            return _Decoded(raw, None, self.bbox_format, reported, {}, error)
        text = str.__str__(text)
        shown, error = _view_sizes(dict.get(action, "view_sizes"), len(self.episode.views), limit)
        parsed = parse_action_text(text, self.tool_names, limit)
        return _Decoded(text[:limit], parsed.call, self.bbox_format, reported, shown, error or parsed.error)

    def _decode_call(self, action: dict[Any, Any]) -> _Decoded:
        """``{"name": ..., "arguments": {...}}`` plus the policy's reports."""
        limit = self.max_action_chars
        reported = _reported_uncertainty(action, limit)
        checked = bound(action, limit, skip=METADATA_KEYS, what="the tool call")
        raw = _dump(json_safe(checked.value, limit))
        if checked.error is not None:
            return _Decoded(raw, None, self.bbox_format, reported, {}, checked.error)
        shown, error = _view_sizes(dict.get(action, "view_sizes"), len(self.episode.views), limit)
        if error is not None:
            return _Decoded(raw, None, self.bbox_format, reported, {}, error)
        parsed = call_from_object(checked.value, "", self.tool_names, limit)
        return _Decoded(raw, parsed.call, self.bbox_format, reported, shown, parsed.error)

    def _decode_structured(self, action: dict[Any, Any]) -> _Decoded:
        """An action of ``action_space``: tool index, box as 0-1 fractions, view index, text, entropy."""
        limit = self.max_action_chars
        checked = bound(action, limit, what="the structured action")
        raw = _dump(json_safe(checked.value, limit))
        fields = checked.value  # a plain copy (numpy arrays are lists)
        reported = {"entropy": _finite_unit(fields.get("entropy"))}

        def refuse(message: str) -> _Decoded:
            return _Decoded(raw, None, "norm", reported, {}, ActionError(ErrorCode.MALFORMED_ACTION, message))

        if checked.error is not None:
            return _Decoded(raw, None, "norm", reported, {}, checked.error)
        index = _as_index(fields["tool"], len(self.tool_names))
        if index is None:
            return refuse(f"'tool' must be an integer in [0, {len(self.tool_names)})")
        tool = self._tools[self.tool_names[index]]
        args: dict[str, Any] = {}
        for role, key in (("box", "bbox"), ("view", "view"), ("text", "text")):
            name = tool.argument_with_role(role)
            if name is None or fields.get(key) is None:
                continue
            value = fields[key]
            if role == "box":
                try:
                    value = [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
                except (TypeError, ValueError, OverflowError):
                    return refuse("'bbox' must be 4 numbers [x1, y1, x2, y2], fractions 0-1 of the view")
            elif role == "view":
                value = _as_index(value, self.max_steps + 1)
                if value is None:
                    return refuse(f"'view' must be an integer in [0, {self.max_steps}]")
            args[name] = value
        return _Decoded(raw, ToolCall(tool.name, args), "norm", reported, {}, None)

    def _apply(self, tool: Tool, args: dict[str, Any], bbox_format: str, episode: Episode, shown=None):
        """Resolve view and box arguments, then run the tool; never raises.

        ``shown`` maps view indices to the (width, height) the policy saw them at: the frame of "pixel" boxes
        when it differs from the delivered size (a VLM processor resized the view).
        """
        try:
            view_key = tool.argument_with_role("view")
            if view_key is not None and view_key in args and not 0 <= args[view_key] < len(episode.views):
                raise ToolError(
                    ErrorCode.BAD_VIEW_INDEX,
                    f"{view_key}={args[view_key]} does not exist; views 0..{len(episode.views) - 1} exist",
                )
            box_key = tool.argument_with_role("box")
            if box_key is not None and box_key in args:
                source = episode.views[args.get(view_key, episode.current_view) if view_key else episode.current_view]
                args[box_key] = box_from_agent(
                    args[box_key],
                    view_box=source.box,
                    view_size=(shown or {}).get(source.index, source.size),
                    bbox_format=bbox_format,
                    image_size=episode.image_size,
                    min_side=self.min_box_side,
                    max_aspect=self.max_aspect_ratio,
                )
            result = tool.apply(episode, args, self._ctx)
        except ToolError as exc:
            return ToolResult(), exc.error
        except Exception as exc:  # a buggy tool must not end a training run
            return ToolResult(), ActionError(ErrorCode.TOOL_FAILED, f"{tool.name} failed: {type(exc).__name__}: "
                                                                   f"{_exception_text(exc)}")
        problem = _result_problem(result)
        if problem:
            return ToolResult(), ActionError(ErrorCode.TOOL_FAILED, f"{tool.name} returned {problem}")
        return result, None

    def _entropy(self, reported: dict[str, Any], episode: Episode) -> tuple[float | None, str | None]:
        value = _finite_unit(reported.get("entropy"))
        if value is not None:
            return value, "policy"
        value = _finite_unit(self.estimator.estimate(episode))
        return (value, "estimator") if value is not None else (None, None)

    def _observation(self, feedback: str) -> dict[str, Any]:
        episode = self.episode
        window = np.zeros(self.entropy_window, dtype=np.float32)
        mask = np.zeros(self.entropy_window, dtype=np.int8)
        recent = [s.entropy for s in episode.steps[-self.entropy_window :]]
        offset = self.entropy_window - len(recent)
        for i, value in enumerate(recent):
            if value is not None:
                window[offset + i], mask[offset + i] = value, 1
        w, h = episode.image_size
        box = episode.view.box
        return {
            "image": episode.render_view(episode.current_view, (self.obs_size, self.obs_size)),
            "question": self._question,
            "options": self._options,
            "feedback": normalize_text(feedback, MAX_FEEDBACK_LENGTH),
            "entropy": window,
            "entropy_mask": mask,
            "view_box": np.array([box.x1 / w, box.y1 / h, box.x2 / w, box.y2 / h], dtype=np.float32),
            "step": min(episode.num_steps, self.max_steps),
        }

    def _info(self, new_views, error, terms, answer, applied_box, entropy) -> dict[str, Any]:
        episode = self.episode
        grade = episode.grade
        return {
            "sample_id": episode.sample.sample_id,
            "sample_index": self._sample_index,
            "views": tuple(episode.render_view(i) for i in new_views) if self.return_views else (),
            "view_index": episode.current_view,
            "num_views": len(episode.views),
            "error": error.code.value if error else "",
            "error_message": error.message if error else "",
            "reward_terms": dict(terms),
            "stop_reason": episode.stop_reason,
            "action_mask": self.action_masks(),
            "is_success": bool(grade["correct"]) if grade else False,
            "applied_box": applied_box.as_list() if applied_box is not None else None,
            "entropy": entropy,
            "answer": answer,
        }


def _merge_dataset_kwargs(dataset_kwargs: dict[str, Any] | None, selection: dict[str, Any]) -> dict[str, Any]:
    """``dataset_kwargs`` plus the selection kwargs the env takes directly (those not ``None``)."""
    merged = dict(dataset_kwargs or {})
    for key, value in selection.items():
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise ValueError(f"{key} is given twice with different values: {value!r} and dataset_kwargs[{key!r}]="
                             f"{merged[key]!r}")
        merged[key] = value
    return merged


class _Decoded(NamedTuple):
    """An action after decoding: what the record keeps, the call (or the error) and the policy's reports."""

    raw: str
    call: ToolCall | None
    bbox_format: str
    reported: dict[str, Any]
    shown: dict[int, tuple[int, int]]  # view_sizes: the frame of "pixel" boxes per view
    error: ActionError | None


def _record(episode, raw, call, error, result, entropy, source, reported, terms, feedback, limit):
    return StepRecord(
        step=episode.num_steps + 1,
        raw=raw,
        call=json_safe(call.to_dict(), limit, MAX_NESTING) if call is not None else None,
        tool=call.name if call is not None and error is None else None,
        error={"code": error.code.value, "message": error.message} if error else None,
        applied_box=result.applied_box.as_list() if result.applied_box is not None else None,
        new_view=result.view.index if result.view is not None else None,
        current_view=episode.current_view,
        entropy=entropy,
        entropy_source=source,
        tool_entropy=reported.get("tool_entropy"),
        token_entropies=reported.get("token_entropies"),
        reward_terms=dict(terms),
        feedback=feedback,
        answer=result.answer,
    )


def _view_sizes(value: Any, n_views: int, limit: int) -> tuple[dict[int, tuple[int, int]], ActionError | None]:
    """``view_sizes`` of a text or call dict, checked: {view index: (width, height) the policy saw it at}.

    Accepted: a dict of view index (int, or a string of digits as JSON keys are) to ``[width, height]``,
    or a list of ``[width, height]`` by view index; sizes are whole numbers in [1, MAX_VIEW_SIZE_SIDE].
    """
    if value is None:
        return {}, None

    def bad(message: str) -> tuple[dict[int, tuple[int, int]], ActionError]:
        return {}, ActionError(ErrorCode.BAD_VIEW_SIZES, f"view_sizes {message}")

    if isinstance(value, np.ndarray) or not isinstance(value, (dict, list, tuple)):
        return bad(f"must be {{view index: [width, height]}} or a list of [width, height], got {_type_name(value)}")
    checked = bound(value, limit, 2, what="view_sizes", int_keys=True)
    if checked.error is not None:
        return bad(checked.error.message.removeprefix("view_sizes "))
    raw = checked.value
    if isinstance(raw, dict):
        items = raw.items()
    else:
        items = enumerate(raw)
    if len(raw) > n_views:
        return bad(f"has {len(raw)} entries but the episode has {n_views} views")
    out: dict[int, tuple[int, int]] = {}
    for key, size in items:
        index = _as_index(key, n_views)
        if index is None and isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9:
            index = _as_index(int(key), n_views)
        if index is None:
            return bad(f"key {preview(key)} is not the index of a view (0..{n_views - 1})")
        if not isinstance(size, list) or len(size) != 2:
            return bad(f"[{index}] must be [width, height], got {preview(size)}")
        w, h = (_as_index(v, MAX_VIEW_SIZE_SIDE + 1) for v in size)
        if not w or not h:
            return bad(f"[{index}] = {preview(size)}: width and height are whole numbers in [1, {MAX_VIEW_SIZE_SIDE}]")
        out[index] = (w, h)
    return out, None


def _as_index(value: Any, n: int) -> int | None:
    """``value`` as an integer in ``[0, n)``: an int, a numpy integer or an integral float (not a bool); else None."""
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        value = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    else:
        return None
    return value if 0 <= value < n else None


def _reported_uncertainty(action: dict[Any, Any], limit: int) -> dict[str, Any]:
    """The uncertainty a text or call dict reports; what is not a finite number counts as not reported."""
    return {
        "entropy": _finite_unit(bound(dict.get(action, "entropy"), 64, 3).value),
        "tool_entropy": _finite_unit(bound(dict.get(action, "tool_entropy"), 64, 3).value),
        "token_entropies": _token_entropies(dict.get(action, "token_entropies"), limit),
    }


def _token_entropies(value: Any, limit: int) -> tuple[float | None, ...] | None:
    """One value per generated token: a list, tuple or 1-D array of at most ``limit`` numbers."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.size > limit:
            return None
        if value.dtype.kind in "iuf":  # the common case, without a walk
            floats = value.astype(np.float64)
            clipped = np.clip(np.nan_to_num(floats, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).tolist()
            return tuple(v if ok else None for v, ok in zip(clipped, np.isfinite(floats).tolist()))
    elif isinstance(value, list):
        if list.__len__(value) > limit:  # the base class's len: a subclass's own methods are never called
            return None
    elif not isinstance(value, tuple) or tuple.__len__(value) > limit:
        return None
    checked = bound(value, 32 * limit, 2)  # a float is at most 24 characters of JSON
    if checked.error is not None or not isinstance(checked.value, list) or len(checked.value) > limit:
        return None
    return tuple(_finite_unit(v) for v in checked.value)


def _finite_unit(value: Any) -> float | None:
    """``value`` as a float clipped to [0, 1], or ``None`` when absent or not a finite real number.

    A number may come wrapped once or twice in a one-element list or array (``[0.4]``, ``np.array([0.4])``).
    Reads plain Python and numpy numbers only (what :func:`~medvr_env.bounded.bound` copies).
    """
    for _ in range(3):
        if isinstance(value, np.ndarray):
            if value.size != 1:
                return None
            value = value.reshape(-1)[0]
        elif type(value) in (list, tuple):
            if len(value) != 1:
                return None
            value = value[0]
    if type(value) not in (int, float) and not isinstance(value, (np.integer, np.floating)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else None


def _result_problem(result: Any) -> str:
    """What is wrong with a tool's return value, or "" (a user tool's bug becomes TOOL_FAILED)."""
    if not isinstance(result, ToolResult):
        return f"a {_type_name(result)}, not a ToolResult"
    if not isinstance(result.feedback, str):
        return f"feedback that is a {_type_name(result.feedback)}, not a string"
    if result.answer is not None and not isinstance(result.answer, str):
        return f"an answer that is a {_type_name(result.answer)}, not a string"
    return ""


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)[:MAX_MESSAGE_CHARS]
    except Exception:  # an exception whose __str__ fails
        return "(no message)"


def _type_name(obj: Any) -> str:
    return getattr(type(obj), "__name__", "object")


def _dump(value: Any) -> str:
    """JSON text of a value :func:`~medvr_env.bounded.bound` already made safe."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
