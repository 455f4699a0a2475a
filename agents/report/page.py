"""The HTML page: one self-contained file (styles, script and images inline; no network, opens from disk).

Large parts stay inert until needed: each episode's detail, each group and each original
image is a ``<script type="application/json">`` / ``text/plain`` block that the browser
only tokenises while loading; the page's script parses a block when it is opened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

_HERE = Path(__file__).parent


def json_block(block_id: str, data: Any) -> str:
    """``data`` as an inert JSON block; every ``<`` is escaped so no text can close the script element.

    NaN and infinities (which trajectory files may hold, e.g. an entropy) become ``null``: JSON has no such values.
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c")
    return f'<script type="application/json" id="{block_id}">{text}</script>\n'


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def text_block(block_id: str, text: str) -> str:
    """A plain-text block (an image data URI: base64 never contains ``<``)."""
    if "<" in text:
        raise ValueError(f"text block {block_id!r} must not contain '<'")
    return f'<script type="text/plain" id="{block_id}">{text}</script>\n'


def render_page(*, title: str, meta: str, summary_html: str, plots: Sequence[str], notes: Sequence[str],
                index: dict[str, Any], blocks: Sequence[str], has_groups: bool, compare_html: str = "") -> str:
    """The whole report as one HTML string."""
    css = (_HERE / "report.css").read_text(encoding="utf-8")
    js = (_HERE / "report.js").read_text(encoding="utf-8")
    nav = ['<a href="#summary">summary</a>']
    if compare_html:
        nav.append('<a href="#changes">changes</a>')
    if has_groups:
        nav.append('<a href="#groups">groups</a>')
    nav.append('<a href="#episodes">episodes</a>')
    note_html = "".join(f'<p class="note">{n}</p>' for n in notes)
    groups = ('<section id="groups"><h2>Groups of rollouts</h2><div id="group-pager"></div><div id="group-list">'
              '</div></section>' if has_groups else "")
    return "".join([
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{css}</style></head><body>\n",
        f'<header><h1>{escape(title)}</h1><span class="meta">{meta}</span><nav>{" · ".join(nav)}</nav></header>\n',
        f'<section id="summary"><h2>Summary</h2>{note_html}{summary_html}',
        f'<div class="plots">{"".join(plots)}</div></section>\n',
        compare_html, groups,
        ('<section id="episodes"><h2>Episodes</h2><div id="filters" class="filters"></div>'
         '<div id="pager-top"></div><div id="cards" class="cards"></div><div id="pager-bottom"></div></section>\n'),
        json_block("index", index), *blocks,
        f"<script>{js}</script>\n</body></html>\n",
    ])


__all__ = ["json_block", "render_page", "text_block"]
