"""The tool plugin API.

A tool is a class with a ``name``, a ``description``, a JSON-schema ``parameters``
object and an ``apply(episode, args, ctx)`` method. Registering it (``@register_tool``)
makes it available to the env (``tools=[..., "name"]``), the text protocol, the
prompt renderer and the structured action space. The built-in think / zoom / crop /
relook / answer tools are written exactly this way.

Argument roles tie schema properties to the env's machinery through the
``"x-medvr-role"`` keyword:

- ``"box"``: four numbers in the env's ``bbox_format`` on the source view. The env
  converts them to an original-pixel :class:`~medvr_env.boxes.Box` (clamped, grown,
  validated) before ``apply`` sees them. In the structured action space this
  argument is filled from ``bbox`` (always 0-1 of the source view).
- ``"view"``: an index into ``episode.views``, checked to exist. A box argument is
  relative to this view when it is given, else to the current view. Filled from
  ``view`` in the structured action space.
- ``"text"``: a string; filled from ``text`` in the structured action space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from ..bounded import preview
from ..boxes import Box
from ..episode import Episode, View
from ..errors import ActionError, ErrorCode, ToolError
from ..importing import import_object

ROLE_KEY = "x-medvr-role"


@dataclass(frozen=True)
class ToolContext:
    """Env settings a tool may need."""

    view_size: int
    max_view_side: int
    bbox_format: str


@dataclass(frozen=True)
class ToolResult:
    """What a tool did: feedback text for the agent, and optionally a new view, an applied box or an answer."""

    feedback: str = ""
    view: View | None = None
    applied_box: Box | None = None
    answer: str | None = None


class Tool:
    """Base class for tools. Subclass, set the class attributes, implement :meth:`apply`, then ``@register_tool``."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "required": []}
    aliases: ClassVar[tuple[str, ...]] = ()
    terminal: ClassVar[bool] = False

    def apply(self, episode: Episode, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise NotImplementedError

    def is_available(self, episode: Episode) -> bool:
        """Whether the action mask should offer this tool now."""
        return True

    @classmethod
    def function_schema(cls) -> dict[str, Any]:
        """The OpenAI/Qwen function schema, with MedVR's role keywords removed."""
        return {"name": cls.name, "description": cls.description, "parameters": _strip_roles(cls.parameters)}

    @classmethod
    def argument_with_role(cls, role: str) -> str | None:
        for key, spec in cls.parameters.get("properties", {}).items():
            if spec.get(ROLE_KEY) == role:
                return key
        return None


def _strip_roles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_roles(v) for k, v in schema.items() if k != ROLE_KEY}
    if isinstance(schema, list):
        return [_strip_roles(v) for v in schema]
    return schema


# --------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Tool]] = {}
_ALIASES: dict[str, str] = {}


def register_tool(cls: type[Tool]) -> type[Tool]:
    """Class decorator: make ``cls`` available by its ``name`` (and ``aliases``).

    Re-registering the same class is a no-op; a different class under a taken name is an error.
    """
    for attr in ("name", "description"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise TypeError(f"tool class {cls.__qualname__} needs a non-empty string class attribute {attr!r}")
    if cls.parameters.get("type") != "object":
        raise TypeError(f"tool {cls.name!r}: parameters must be a JSON schema with type 'object'")
    for key in [cls.name, *cls.aliases]:
        owner = _REGISTRY.get(_ALIASES.get(key, key))
        if owner is not None and _qualified(owner) != _qualified(cls):
            raise ValueError(f"tool name {key!r} is already registered by {_qualified(owner)}")
    _REGISTRY[cls.name] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = cls.name
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_tools() -> dict[str, type[Tool]]:
    """All registered tools by name."""
    return dict(_REGISTRY)


def canonical_tool_name(name: str) -> str | None:
    """Resolve an alias (e.g. DeepEyes' ``image_zoom_in_tool``) to a registered name; ``None`` if unknown."""
    name = _ALIASES.get(name, name)
    return name if name in _REGISTRY else None


def resolve_tool(spec: str | type[Tool]) -> type[Tool]:
    """A tool class from a registered name, an alias, ``"package.module:ClassName"`` or the class itself."""
    if isinstance(spec, type) and issubclass(spec, Tool):
        return register_tool(spec)
    if not isinstance(spec, str):
        raise TypeError(f"a tool is given by name or class, got {type(spec).__name__}")
    if ":" in spec:
        return resolve_tool(import_object(spec, "tool"))
    name = canonical_tool_name(spec)
    if name is None:
        raise ValueError(f"unknown tool {spec!r}; registered tools: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


# --------------------------------------------------------------------- arguments
_JSON_TYPES = {"string": str, "boolean": bool, "object": dict}


def validate_arguments(tool: type[Tool], args: Any) -> tuple[dict[str, Any] | None, ActionError | None]:
    """Check ``args`` against the tool's schema (the subset of JSON schema tools use).

    Returns the arguments (with integral floats turned into ints where an integer is
    expected) or the first error found, with a specific code.
    """
    if not isinstance(args, Mapping):
        return None, ActionError(ErrorCode.BAD_ARGUMENTS, f"'arguments' of {tool.name} must be a JSON object")
    props: dict[str, Any] = tool.parameters.get("properties", {})
    for key in tool.parameters.get("required", []):
        if key not in args:
            return None, ActionError(ErrorCode.MISSING_ARGUMENT, f"{tool.name} needs argument {key!r}")
    out: dict[str, Any] = {}
    for key, value in args.items():
        spec = props.get(key)
        if spec is None:
            if tool.parameters.get("additionalProperties", False) is False:
                return None, ActionError(
                    ErrorCode.UNKNOWN_ARGUMENT, f"{tool.name} has no argument {key!r}; it takes {sorted(props)}"
                )
            out[key] = value
            continue
        checked, error = _check_value(f"{tool.name}.{key}", value, spec)
        if error is not None:
            return None, error
        out[key] = checked
    return out, None


def _check_value(where: str, value: Any, spec: dict[str, Any]) -> tuple[Any, ActionError | None]:
    kind = spec.get("type")
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, ActionError(ErrorCode.WRONG_TYPE, f"{where} must be a number, got {_describe(value)}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # a JSON integer too large for a float
            return None, ActionError(ErrorCode.OUT_OF_RANGE, f"{where} is too large")
        if not finite:
            return None, ActionError(ErrorCode.NON_FINITE, f"{where} must be finite, got {value}")
        if kind == "integer":
            if value != int(value):
                return None, ActionError(ErrorCode.WRONG_TYPE, f"{where} must be an integer, got {value}")
            value = int(value)
        lo, hi = spec.get("minimum"), spec.get("maximum")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return None, ActionError(ErrorCode.OUT_OF_RANGE, f"{where}={value} is outside [{lo}, {hi}]")
        return value, None
    if kind == "array":
        if not isinstance(value, (list, tuple)):
            return None, ActionError(ErrorCode.WRONG_TYPE, f"{where} must be a list, got {_describe(value)}")
        n_min, n_max = spec.get("minItems", 0), spec.get("maxItems", math.inf)
        if not n_min <= len(value) <= n_max:
            want = n_min if n_min == n_max else f"{n_min}..{n_max}"
            return None, ActionError(ErrorCode.WRONG_TYPE, f"{where} needs {want} items, got {len(value)}")
        items = []
        for i, item in enumerate(value):
            checked, error = _check_value(f"{where}[{i}]", item, spec.get("items", {}))
            if error is not None:
                return None, error
            items.append(checked)
        return items, None
    if kind in _JSON_TYPES and not isinstance(value, _JSON_TYPES[kind]):
        return None, ActionError(ErrorCode.WRONG_TYPE, f"{where} must be a {kind}, got {_describe(value)}")
    if "enum" in spec and not (isinstance(value, (str, int, float, type(None))) and value in spec["enum"]):
        return None, ActionError(ErrorCode.OUT_OF_RANGE, f"{where} must be one of {spec['enum']}, got {preview(value)}")
    if kind == "string" and len(value) > spec.get("maxLength", math.inf):
        return None, ActionError(ErrorCode.OUT_OF_RANGE, f"{where} is longer than {spec['maxLength']} characters")
    return value, None


def _describe(value: Any) -> str:
    """Type and a short excerpt of an argument value, for a message (bounded, whatever the value is)."""
    return f"{type(value).__name__} {preview(value)}"


__all__ = [
    "ROLE_KEY",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "canonical_tool_name",
    "register_tool",
    "registered_tools",
    "resolve_tool",
    "validate_arguments",
]
