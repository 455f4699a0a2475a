#!/usr/bin/env python
"""Fuzz every action path of every registered MedVR env id with generated malformed actions.

A seeded generator of hostile actions (no hypothesis: the same ``--seed`` gives the same
actions on every machine) drives each registered id through each action path:

- ``text``: protocol text: mutated tool calls, JSON nested thousands of levels deep,
  numbers of 5,000 digits, ``1e999``/``NaN``, answers around and far over the length
  limit, U+FDFA (18 characters under NFKC), lone surrogates, unclosed and mixed tags;
- ``text+reports``: ``{"text": ..., "entropy": ..., "token_entropies": ..., "view_sizes": ...}``
  with hostile reports and sizes;
- ``call``: ``{"name": ..., "arguments": ...}`` with hostile names, argument keys and
  values (huge ints, deep nesting, non-string keys, numpy values, objects whose methods
  raise, megabyte strings), arguments as JSON strings, ``parameters``, extra keys;
- ``structured``: the ``Dict`` action space's fields with hostile values;
- ``junk``: anything else as the action (bare numbers, lists, sets, arrays, objects, ...);
- ``sb3``: on the SB3 ids, hostile ``MultiDiscrete`` / ``Discrete`` encodings through the
  registered wrapper stack. Refusing them with ``InvalidActionError`` (a ``ValueError``
  naming the space) is the documented behaviour and counts as ``refused``, not as an
  exception; a refused action must leave the episode untouched.

About one step in six is a valid move (zoom, crop, relook, think), so episodes have
several views and the hostile actions meet every state. After **every** step the
harness writes the episode record with ``json.dumps(episode.to_dict(), allow_nan=False)``
and checks the observation against the observation space, the reward and the error code.
Ids whose dataset is absent are skipped with the reason printed.

The table: actions, distinct error codes seen, exceptions (target 0), unwritable records
(target 0), bad outputs (observation outside its space, unknown error code, non-finite
reward; target 0), the mean and slowest step, and the largest step record (JSON
characters). The exit status is 1 when any target is missed.

Usage::

    python benchmarks/fuzz_actions.py                      # 100,000 malformed actions, seed 0
    python benchmarks/fuzz_actions.py --actions 5000 --seed 3 --ids MedVR-VQA-v0 MedVR-VQA-Tensor-v0
    python benchmarks/fuzz_actions.py --json fuzz.json     # also write the report as JSON
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable

import gymnasium as gym
import numpy as np

import medvr_env  # noqa: F401  (registers the ids)
from medvr_env.bounded import json_safe, preview
from medvr_env.data.files import DatasetNotFoundError
from medvr_env.errors import ErrorCode
from medvr_env.registration import load_registry
from medvr_env.wrappers.sb3_actions import InvalidActionError

BASE_PATHS = ("text", "text+reports", "call", "structured", "junk")
SB3_PATH = "sb3"
ERROR_VALUES = frozenset(code.value for code in ErrorCode) | {""}
VALID_FRACTION = 1 / 6
SAMPLES_PER_ID = 8  # resets pick among the first samples, so procedural images stay cached (image_cache=8)
LIMIT = 8192


# ============================================================================ hostile values
class Boom(Exception):
    """Raised by every method of the hostile classes below: the env must never call them."""


def _boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("a method of a policy's object was called")


class EvilObject:
    __repr__ = __str__ = __len__ = __iter__ = __float__ = __int__ = __index__ = __bool__ = _boom
    __eq__ = __lt__ = __gt__ = __getitem__ = __array__ = __getattr__ = _boom
    __hash__ = object.__hash__


class EvilStr(str):
    __repr__ = __str__ = __len__ = __iter__ = __eq__ = __getitem__ = strip = _boom
    __hash__ = str.__hash__


class EvilInt(int):
    __repr__ = __str__ = __index__ = __int__ = __float__ = __eq__ = __lt__ = __gt__ = _boom
    __hash__ = int.__hash__


class EvilFloat(float):
    __repr__ = __str__ = __float__ = __eq__ = __lt__ = __gt__ = __int__ = _boom
    __hash__ = float.__hash__


class EvilList(list):
    __repr__ = __iter__ = __len__ = __getitem__ = __eq__ = _boom


class EvilDict(dict):
    __repr__ = __iter__ = __len__ = __getitem__ = __contains__ = get = items = keys = values = __eq__ = _boom


def _evil_list(items: list[Any]) -> EvilList:
    out = EvilList()
    for item in items:
        list.append(out, item)
    return out


def _evil_dict(pairs: dict[Any, Any]) -> EvilDict:
    out = EvilDict()
    for key, value in pairs.items():
        dict.__setitem__(out, key, value)
    return out


def _nested_list(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def _self_referential() -> tuple[list[Any], dict[str, Any]]:
    loop: list[Any] = []
    loop.append(loop)
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    return loop, cycle


BIG_INTS = [2**31, 2**63, 2**64, 10**20, 10**308, 10**309, 10**400, 10**4299, 10**4301, 10**5000, 10**9000]
FLOATS = [0.0, -0.0, 0.5, 1.7, 2.0, 1e-320, 1e308, -1e308, math.nan, math.inf, -math.inf, 0.999999, 1.0000001]
LONG_LENGTHS = [LIMIT - 1, LIMIT, LIMIT + 1, 100_000, 1_000_000]
UNICODE = ["\ufdfa", "\ud800", "\udfff", "\x00", "\u202e", "a\u0301", "\U0001f642", "\u00e9", "\ufeff", "\n", "\\", '"']
TOOL_NAMES = ["zoom", "crop", "relook", "answer", "think", "image_zoom_in_tool", "zoom_in", "crop_image", "re_look",
              "final_answer", "ZOOM", "zoom ", "", "unknown_tool", "__class__", "name", "\ufdfa"]
ARG_KEYS = ["bbox_2d", "source", "label", "view", "text", "bbox", "x", "", "__proto__"]


class HostileActions:
    """Seeded generator of malformed actions for every path (deterministic for a seed)."""

    def __init__(self, seed: str | int) -> None:
        self.rng = random.Random(seed)
        self._long = {n: ("y" * n, "\ufdfa" * n) for n in LONG_LENGTHS}
        self._deep = {d: (_nested_list(d), _nested_dict(d)) for d in (31, 32, 33, 100, 1000, 3000)}
        self._loops = _self_referential()
        self._big_arrays = {"zeros": np.zeros(10**6), "object": np.empty(6, dtype=object)}

    # ---------------------------------------------------------------- pieces
    def choice(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def number(self) -> Any:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randint(-3, 12)
        if r < 0.45:
            return self.choice(BIG_INTS) * self.choice([1, -1])
        if r < 0.75:
            return self.choice(FLOATS)
        if r < 0.85:
            return self.rng.uniform(-2, 1200)
        return self.choice([np.float32(math.nan), np.float64(math.inf), np.int64(-1), np.uint64(2**64 - 1),
                            np.int8(3), np.float16(0.5), np.longdouble("1e4000"), np.bool_(True), True, False])

    def string(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return "".join(chr(self.rng.randint(32, 126)) for _ in range(self.rng.randint(0, 30)))
        if r < 0.6:
            return "".join(self.choice(UNICODE) for _ in range(self.rng.randint(1, 12)))
        if r < 0.7:
            return self.choice(self._long[self.choice(LONG_LENGTHS)])
        return self.choice(["", " ", "0", "1.5", "NaN", "Infinity", "1e999", "null", "[0, 0, 1, 1]", "yes", "B",
                            "zoom", "<answer>no</answer>", "</tool_call>"])

    def scalar(self) -> Any:
        return self.number() if self.chance(0.5) else self.string() if self.chance(0.7) else None

    def array(self) -> np.ndarray:
        return self.choice([
            np.zeros(0), np.zeros(1), np.zeros(3), np.array([0.1, 0.1, 0.6, 0.6]), np.zeros(5),
            np.full(4, math.nan), np.full(4, math.inf), np.array([[0.0, 0.0, 0.5, 0.5]]), np.zeros((1,) * 40),
            np.array(["a", "b", "c", "d"]), np.array([1j, 2j]), np.zeros(4, dtype=bool), np.arange(4, dtype=np.uint8),
            np.zeros(4, dtype="datetime64[s]"), np.array([10**30, 1, 2, 3], dtype=object), self._big_arrays["zeros"],
            self._big_arrays["object"], np.array(3.5), np.array([2**63], dtype=np.uint64),
            np.array([0.25, 0.25, 0.75, 0.75], np.longdouble),
        ])

    def oddity(self) -> Any:
        """A value JSON cannot carry, or one whose methods raise."""
        return self.choice([
            object(), EvilObject(), EvilStr("zoom"), EvilInt(1), EvilFloat(0.5), _evil_list([0, 0, 0.5, 0.5]),
            _evil_dict({"bbox_2d": [0, 0, 0.5, 0.5]}), Decimal("NaN"), Fraction(1, 3), complex(1, 2), range(10**9),
            (lambda: 0), (x for x in range(3)), Ellipsis, int, memoryview(b"ab"), bytearray(b"\xff"), b"\x00\xff",
            {1, 2}, frozenset({3}), self._loops[0], self._loops[1], {(1, 2): 3}, {None: 1}, {1.5: 2}, {True: 1},
            {EvilObject(): 1}, np.complex128(1j), np.datetime64("2020-01-01"), np.bytes_(b"x"), np.void(b"ab"),
        ])

    def deep(self) -> Any:
        lists, dicts = self._deep[self.choice(list(self._deep))]
        return lists if self.chance(0.6) else dicts

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.35 or depth > 2:
            return self.scalar()
        if r < 0.5:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 6))]
        if r < 0.58:
            return tuple(self.value(depth + 1) for _ in range(self.rng.randint(0, 4)))
        if r < 0.68:
            return {self.choice(ARG_KEYS): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}
        if r < 0.78:
            return self.array()
        if r < 0.9:
            return self.oddity()
        return self.deep()

    def box(self) -> Any:
        if self.chance(0.5):
            n = self.choice([4, 4, 3, 5])
            return [self.number() if self.chance(0.4) else self.rng.uniform(0, 1) for _ in range(n)]
        return self.value()

    def index(self) -> Any:
        return self.choice([0, 1, 2, -1, 7, 10**5000, 1.0, 1.5, math.nan, "0", True, None, np.int64(1),
                            np.array([1]), [0], EvilInt(0)]) if self.chance(0.8) else self.value()

    # ---------------------------------------------------------------- paths
    def text(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return self._mutate(self.valid_text())
        if r < 0.45:
            depth = self.choice([30, 33, 500, 3000, 5000])
            close = "]" * (depth if self.chance(0.7) else self.rng.randint(0, depth))
            return f'<tool_call>{{"name": "zoom", "arguments": {{"bbox_2d": {"[" * depth}{close}}}}}</tool_call>'
        if r < 0.55:
            number = self.choice(["1e999", "-1e999", "NaN", "Infinity", "1" + "0" * self.choice([300, 400, 4301, 5000]),
                                  "-0", "0x10", "1_000", ".5", "5."])
            key = self.choice(['"bbox_2d": [0, 0, X, 1]', '"source": X', '"view": X'])
            name = "relook" if "view" in key else "zoom"
            return f'<tool_call>{{"name": "{name}", "arguments": {{{key.replace("X", number)}}}}}</tool_call>'
        if r < 0.65:
            n = self.choice(LONG_LENGTHS)
            return f"<answer>{self.choice(self._long[n])}</answer>"
        if r < 0.75:
            inner = {"bbox_2d": json_safe(self.box(), 20_000) if self.chance(0.3) else [0, 0, 1, 1]}
            args = json.dumps(json.dumps(inner))
            return f'<tool_call>{{"name": "crop", "arguments": {args}}}</tool_call>'
        pieces = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "```json", "```",
                  '{"name": "zoom"', "}", '"arguments": {', "[0, 0, 1, 1]", ",", " ", "<TOOL_CALL>", "\x00"]
        n = self.rng.randint(0, 12)
        return "".join(self.choice(pieces) if self.chance(0.7) else self.string()[:40] for _ in range(n))

    def valid_text(self) -> str:
        box = sorted(self.rng.uniform(0, 1) for _ in range(2)) + sorted(self.rng.uniform(0, 1) for _ in range(2))
        box = [round(box[0], 3), round(box[2], 3), round(box[1], 3), round(box[3], 3)]
        return self.choice([
            f'<think>look</think><tool_call>{{"name": "zoom", "arguments": {{"bbox_2d": {box}}}}}</tool_call>',
            f'<tool_call>{{"name": "crop", "arguments": {{"bbox_2d": {box}, "source": 0}}}}</tool_call>',
            '<tool_call>{"name": "relook", "arguments": {"view": 0}}</tool_call>',
            "<think>the apex is clear</think>",
            "<answer>yes</answer>",
        ])

    def _mutate(self, text: str) -> str:
        chars = list(text)
        for _ in range(self.rng.randint(1, 4)):
            op = self.rng.random()
            at = self.rng.randint(0, len(chars))
            if op < 0.3 and chars:
                del chars[at: at + self.rng.randint(1, 8)]
            elif op < 0.6:
                chars[at:at] = list(self.choice(UNICODE + ["[", "]", "{", "}", '"', ",", ":", "<", ">", "\\u"]))
            elif op < 0.8:
                chars[at:at] = chars[at: at + self.rng.randint(1, 20)] * self.rng.randint(2, 50)
            else:
                chars[at:at] = list(self.string()[:50])
        return "".join(chars)

    def reports(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.chance(0.5):
            out["entropy"] = self.number() if self.chance(0.6) else self.value()
        if self.chance(0.3):
            out["tool_entropy"] = self.number() if self.chance(0.6) else self.value()
        if self.chance(0.4):
            out["token_entropies"] = self.choice([
                [self.number() for _ in range(self.rng.randint(0, 5))], [0.5] * 100_000, np.full(20_000, 0.3),
                "xy", self.value(), _evil_list([0.5]), (x for x in range(3)),
            ])
        if self.chance(0.5):
            out["view_sizes"] = self.view_sizes()
        return out

    def view_sizes(self) -> Any:
        size = [self.choice([400, 300, 0, -5, 1.5, 400.0, 10**5000, math.inf, math.nan, True, "400", 70_000,
                             EvilInt(4)]) for _ in range(self.choice([2, 2, 2, 1, 3]))]
        return self.choice([
            {self.choice([0, 1, 2, -1, 7, 10**5000, 1.0, 1.5, "0", "01", True, None, np.int64(1), EvilInt(0)]): size},
            {0: size, 1: [224, 224]}, [size], {"0": size}, {"x": size},
            {i: [224, 224] for i in range(50)}, size, self.value(), np.array([[400, 300]]), 5,
            {EvilObject(): [1, 2]}, _evil_dict({0: [400, 300]}),
        ])

    def call(self) -> dict[str, Any]:
        name = self.choice(TOOL_NAMES) if self.chance(0.85) else self.value()
        r = self.rng.random()
        if r < 0.55:
            args: Any = {}
            for _ in range(self.rng.randint(0, 3)):
                key = self.choice(ARG_KEYS) if self.chance(0.9) else self.choice([1, (1, 2), None, EvilStr("evil key")])
                if isinstance(key, EvilStr) and any(isinstance(k, EvilStr) for k in args):
                    continue  # a second equal-hash EvilStr key would make the dict itself call __eq__
                role = key if type(key) is str else ""
                args[key] = self.box() if role in ("bbox_2d", "bbox") else self.index() if role in ("source", "view") \
                    else self.value()
        elif r < 0.7:
            as_json = self.chance(0.5)
            args = json.dumps({"bbox_2d": [0, 0, 1, 1], "x": self.string()[:100]}) if as_json else self.string()
        else:
            args = self.value()
        action: dict[Any, Any] = {"name": name}
        if self.chance(0.9):
            action["parameters" if self.chance(0.1) else "arguments"] = args
        if self.chance(0.15):
            action[self.choice(["id", "type", (1, 2), 7, EvilStr("k"), "function"])] = self.value()
        action.update(self.reports() if self.chance(0.3) else {})
        return _evil_dict(action) if self.chance(0.03) else action

    def text_with_reports(self) -> dict[str, Any]:
        text = self.text() if self.chance(0.85) else self.value()
        action: dict[Any, Any] = {"text": text, **self.reports()}
        if self.chance(0.1):
            action[self.choice(["extra", (1,), 3])] = self.value()
        return action

    def structured(self, n_tools: int, max_steps: int) -> dict[str, Any]:
        action: dict[Any, Any] = {"tool": self.index() if self.chance(0.7) else self.rng.randrange(n_tools)}
        if self.chance(0.7):
            action["bbox"] = self.box() if self.chance(0.7) else self.array()
        if self.chance(0.5):
            action["view"] = self.index() if self.chance(0.7) else self.rng.randint(0, max_steps)
        if self.chance(0.5):
            action["text"] = self.string() if self.chance(0.7) else self.value()
        if self.chance(0.4):
            action["entropy"] = self.number() if self.chance(0.5) else self.value()
        if self.chance(0.1):
            action[self.choice(["extra", (1, 2), 3, "view_sizes"])] = self.value()
        return action

    def junk(self) -> Any:
        if self.chance(0.15):
            return {self.choice(["nam", "tools", "", "Text"]): self.value()}
        return self.value() if self.chance(0.5) else self.choice([self.array(), self.oddity(), self.deep(),
                                                                  self.number(), None, b"<answer>yes</answer>"])

    def sb3(self, space: gym.Space) -> tuple[Any, bool]:
        """A (usually malformed) action for an SB3 encoding; the flag says whether it is a valid element."""
        if self.chance(0.2):
            return space.sample(), True
        if isinstance(space, gym.spaces.Discrete):
            n = int(space.n)
            bad = [n, -1, 1.7, np.float32(2.5), math.inf, math.nan, 10**5000, True, "3", [1, 2], np.array([[3]]),
                   None, EvilObject(), EvilInt(1), np.array(3, dtype=object), np.uint64(2**64 - 1), {"tool": 1},
                   np.array([1.5]), -(10**30), np.zeros(10**6, np.int64)]
        else:
            nvec = [int(v) for v in space.nvec]
            bad = [[v for v in nvec], [1.7, 0, 0], np.array([1.0, 0.5, 0.0]), [math.inf, 0, 0], [math.nan, 0, 0],
                   [10**5000, 0, 0], ["1", "0", "0"], [True, False, False], [-1, 0, 0], [1, 0], [[1, 0, 0]],
                   np.zeros((3, 1), np.int64), None, EvilObject(), _evil_list([1, 0, 0]), "<answer>yes</answer>", 1,
                   np.array([2**63, 0, 0], np.uint64), np.array([1, 0, 0], dtype=object), [1, 0, 0, 0]]
        return self.choice(bad), False

    def valid_move(self) -> dict[str, Any] | str:
        """A valid action that moves the episode on (new views, thoughts), so hostile ones meet every state."""
        if self.chance(0.5):
            return self.valid_text() if self.chance(0.4) else self.choice([
                {"name": "zoom", "arguments": {"bbox_2d": [0.2, 0.2, 0.7, 0.7]}},
                {"name": "relook", "arguments": {}},
                {"text": "<think>hm</think>", "entropy": 0.4},
            ])
        return {"name": "crop", "arguments": {"bbox_2d": [0.1, 0.1, 0.6, 0.9], "source": 0}}


# ============================================================================ the run
@dataclass
class Cell:
    """Counters of one (env id, action path) row."""

    env_id: str
    path: str
    actions: int = 0
    valid_moves: int = 0
    exceptions: int = 0
    unwritable: int = 0
    bad_output: int = 0
    refused: int = 0
    codes: collections.Counter = field(default_factory=collections.Counter)
    total_s: float = 0.0
    slowest_s: float = 0.0
    slowest_action: str = ""
    largest_record: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, kind: str, action: Any, detail: str) -> None:
        if len(self.failures) < 5:
            self.failures.append(f"{kind}: {detail} <- {preview(action, 120)}")


@dataclass
class Report:
    cells: list[Cell]
    skipped: dict[str, str]
    seed: int
    wall_s: float

    def total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.cells)

    @property
    def ok(self) -> bool:
        return self.total("exceptions") == 0 and self.total("unwritable") == 0 and self.total("bad_output") == 0

    def slowest(self) -> Cell:
        return max(self.cells, key=lambda c: c.slowest_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "wall_s": round(self.wall_s, 1),
            "actions": self.total("actions"),
            "valid_moves": self.total("valid_moves"),
            "exceptions": self.total("exceptions"),
            "unwritable_records": self.total("unwritable"),
            "bad_outputs": self.total("bad_output"),
            "refused_sb3": self.total("refused"),
            "error_codes": dict(sum((c.codes for c in self.cells), collections.Counter()).most_common()),
            "slowest_step_ms": round(self.slowest().slowest_s * 1e3, 2),
            "largest_step_record_chars": max((c.largest_record for c in self.cells), default=0),
            "skipped": self.skipped,
            "rows": [
                {"env_id": c.env_id, "path": c.path, "actions": c.actions, "exceptions": c.exceptions,
                 "unwritable": c.unwritable, "bad_output": c.bad_output, "refused": c.refused,
                 "codes": len(c.codes), "mean_ms": round(c.total_s / max(c.actions + c.valid_moves, 1) * 1e3, 3),
                 "slowest_ms": round(c.slowest_s * 1e3, 2), "slowest_action": c.slowest_action,
                 "largest_record": c.largest_record, "failures": c.failures}
                for c in self.cells
            ],
        }


def fuzz_ids() -> list[str]:
    """Every id in envs_registry.yaml (the MedVR ids)."""
    return [entry["id"] for entry in load_registry()]


def _is_sb3(env: gym.Env) -> bool:
    return not isinstance(env.action_space, (gym.spaces.Dict, gym.spaces.Text))


class _Runner:
    """Steps one env id through one path, checking everything after every step."""

    def __init__(self, env: gym.Env, cell: Cell, gen: HostileActions, outer: bool) -> None:
        self.env, self.cell, self.gen = env, cell, gen
        self.base = env.unwrapped
        self.target = env if outer else self.base  # base paths on SB3 ids go to the unwrapped env
        self.n_samples = min(len(self.base.dataset), SAMPLES_PER_ID)
        self.reset()

    def reset(self) -> None:
        self.env.reset(options={"index": self.gen.rng.randrange(self.n_samples)})

    def step(self, action: Any, valid: bool, sb3_valid: bool | None = None) -> None:
        cell, base = self.cell, self.base
        steps_before = base.episode.num_steps
        start = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = self.target.step(action)
        except InvalidActionError as exc:
            elapsed = time.perf_counter() - start
            self._time(elapsed, action)
            if sb3_valid is None or sb3_valid:
                cell.exceptions += 1
                cell.fail("refused a valid action" if sb3_valid else "InvalidActionError off the SB3 path", action,
                          str(exc)[:200])
            else:
                cell.refused += 1
                if base.episode.num_steps != steps_before:
                    cell.bad_output += 1
                    cell.fail("refused but played", action, "")
            self._count(valid)
            return
        except Exception as exc:  # the thing this harness hunts
            cell.exceptions += 1
            cell.fail("exception", action, f"{type(exc).__name__}: {str(exc)[:200]}")
            self._count(valid)
            self.reset()
            return
        self._time(time.perf_counter() - start, action)
        self._count(valid)
        try:
            record = base.episode.to_dict()
            json.dumps(record, allow_nan=False)
            cell.largest_record = max(cell.largest_record, len(json.dumps(record["steps"][-1], ensure_ascii=False)))
        except Exception as exc:
            cell.unwritable += 1
            cell.fail("unwritable record", action, f"{type(exc).__name__}: {str(exc)[:200]}")
        problem = self._output_problem(obs, reward, terminated, truncated, info)
        if problem:
            cell.bad_output += 1
            cell.fail("bad output", action, problem)
        if not valid:
            cell.codes[info.get("error") or "accepted"] += 1
        if terminated or truncated:
            self.reset()

    def _count(self, valid: bool) -> None:
        if valid:
            self.cell.valid_moves += 1
        else:
            self.cell.actions += 1

    def _time(self, elapsed: float, action: Any) -> None:
        self.cell.total_s += elapsed
        if elapsed > self.cell.slowest_s:
            self.cell.slowest_s, self.cell.slowest_action = elapsed, preview(action, 80)

    def _output_problem(self, obs, reward, terminated, truncated, info) -> str:
        if not self.target.observation_space.contains(obs):
            return "observation outside the observation space"
        if not (isinstance(reward, float) and math.isfinite(reward)):
            return f"reward {reward!r}"
        if not (isinstance(terminated, bool) and isinstance(truncated, bool)):
            return "terminated/truncated are not bools"
        if info.get("error") not in ERROR_VALUES:
            return f"unknown error code {info.get('error')!r}"
        return ""


def run_fuzz(
    n_actions: int,
    seed: int = 0,
    env_ids: list[str] | None = None,
    paths: tuple[str, ...] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    env_kwargs: dict[str, Any] | None = None,
) -> Report:
    """Fuzz ``n_actions`` malformed actions, split evenly over every (env id, path) pair that can run.

    ``env_kwargs`` go to every ``gym.make`` (the tests pass smaller observations to run faster).
    """
    started = time.perf_counter()
    skipped: dict[str, str] = {}
    envs: list[tuple[str, gym.Env]] = []
    for env_id in env_ids or fuzz_ids():
        try:
            envs.append((env_id, gym.make(env_id, **(env_kwargs or {}))))
        except DatasetNotFoundError as exc:
            skipped[env_id] = str(exc).split(". ")[0]
            log(f"skipping {env_id}: {skipped[env_id]}")
    plan: list[tuple[str, gym.Env, str]] = []
    for env_id, env in envs:
        for path in (*BASE_PATHS, SB3_PATH) if _is_sb3(env) else BASE_PATHS:
            if paths is None or path in paths:
                plan.append((env_id, env, path))
    if not plan:
        return Report([], skipped, seed, time.perf_counter() - started)
    share = [n_actions // len(plan) + (i < n_actions % len(plan)) for i in range(len(plan))]
    bar = _progress(n_actions, progress)
    cells = []
    for i, ((env_id, env, path), n) in enumerate(zip(plan, share)):
        cell = Cell(env_id, path)
        cells.append(cell)
        gen = HostileActions(f"{seed}:{env_id}:{path}")
        env.reset(seed=seed)
        runner = _Runner(env, cell, gen, outer=path == SB3_PATH or not _is_sb3(env))
        base = env.unwrapped
        made = _maker(path, gen, base, env)
        while cell.actions < n:
            if path != SB3_PATH and gen.chance(VALID_FRACTION):
                runner.step(gen.valid_move(), valid=True)
                continue
            action, sb3_valid = made()
            runner.step(action, valid=False, sb3_valid=sb3_valid)
            bar(1)
        if not progress:  # one line per finished row instead of a bar (a log file, CI)
            log(f"[{i + 1}/{len(plan)}] {env_id} {path}: {cell.actions:,} actions, {cell.exceptions} exceptions, "
                f"{cell.unwritable} unwritable, {cell.bad_output} bad outputs, slowest {cell.slowest_s * 1e3:.1f} ms "
                f"({time.perf_counter() - started:.0f} s so far)")
    for _, env in envs:
        env.close()
    bar(0, close=True)
    return Report(cells, skipped, seed, time.perf_counter() - started)


def _maker(path: str, gen: HostileActions, base: Any, env: gym.Env) -> Callable[[], tuple[Any, bool | None]]:
    n_tools, max_steps = len(base.tool_names), base.max_steps
    makers: dict[str, Callable[[], tuple[Any, bool | None]]] = {
        "text": lambda: (gen.text(), None),
        "text+reports": lambda: (gen.text_with_reports(), None),
        "call": lambda: (gen.call(), None),
        "structured": lambda: (gen.structured(n_tools, max_steps), None),
        "junk": lambda: (gen.junk(), None),
        SB3_PATH: lambda: gen.sb3(env.action_space),
    }
    return makers[path]


def _progress(total: int, enabled: bool) -> Callable[..., None]:
    if not enabled:
        return lambda n, close=False: None
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda n, close=False: None
    bar = tqdm(total=total, unit="action", mininterval=2.0)

    def update(n: int, close: bool = False) -> None:
        bar.update(n)
        if close:
            bar.close()

    return update


# ============================================================================ the table
def format_report(report: Report) -> str:
    rows = report.to_dict()["rows"]
    head = ("env id", "path", "actions", "codes", "exceptions", "unwritable", "bad out", "refused", "mean ms",
            "slowest ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append(f"| {r['env_id']} | {r['path']} | {r['actions']:,} | {r['codes']} | {r['exceptions']} | "
                     f"{r['unwritable']} | {r['bad_output']} | {r['refused']:,} | {r['mean_ms']:.2f} | "
                     f"{r['slowest_ms']:.1f} |")
    d = report.to_dict()
    lines.append(f"| **all** | | **{d['actions']:,}** | {len(d['error_codes'])} | **{d['exceptions']}** | "
                 f"**{d['unwritable_records']}** | **{d['bad_outputs']}** | {d['refused_sb3']:,} | | "
                 f"**{d['slowest_step_ms']:.1f}** |")
    slow = report.slowest()
    lines += [
        "",
        f"seed {report.seed}; {d['actions']:,} malformed actions and {d['valid_moves']:,} valid moves in "
        f"{d['wall_s']:.0f} s; every record written with json.dumps(allow_nan=False) after every step.",
        f"slowest step: {slow.slowest_s * 1e3:.1f} ms ({slow.env_id}, {slow.path}): {slow.slowest_action}",
        f"largest step record: {d['largest_step_record_chars']:,} characters of JSON",
        "error codes: " + ", ".join(f"{k} {v:,}" for k, v in d["error_codes"].items()),
    ]
    for env_id, reason in report.skipped.items():
        lines.append(f"skipped {env_id}: {reason}")
    for c in report.cells:
        lines += [f"FAIL {c.env_id} {c.path}: {f}" for f in c.failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=100_000, help="malformed actions in all (default 100,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ids", nargs="+", default=None, help="env ids (default: every id in envs_registry.yaml)")
    parser.add_argument("--paths", nargs="+", default=None, choices=[*BASE_PATHS, SB3_PATH])
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    if args.actions < 1:
        parser.error(f"--actions must be at least 1, got {args.actions}")
    report = run_fuzz(args.actions, args.seed, args.ids, tuple(args.paths) if args.paths else None,
                      progress=sys.stderr.isatty(), log=lambda line: print(line, flush=True))
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
