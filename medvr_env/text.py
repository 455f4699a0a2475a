"""Text that goes into observations: an explicit charset and a normaliser that keeps every string inside it.

Gymnasium's ``Text`` space defaults to letters and digits only, so a real question
("Is there a nodule in the left lung?") would fall outside it. Observations use
:data:`CHARSET` (printable ASCII plus newline) and every string passes through
:func:`normalize_text` first: NFKC, accents stripped, tabs to spaces, anything
else outside the charset replaced by ``?``, then truncated.
"""

from __future__ import annotations

import string
import unicodedata

CHARSET: str = "".join(ch for ch in string.printable if ch not in "\t\r\x0b\x0c")
_ALLOWED = frozenset(CHARSET)


def normalize_text(text: str, max_length: int) -> str:
    """Map ``text`` into :data:`CHARSET` and at most ``max_length`` characters."""
    text = unicodedata.normalize("NFKC", str(text))
    decomposed = unicodedata.normalize("NFKD", text)
    out = []
    for ch in decomposed:
        if ch in _ALLOWED:
            out.append(ch)
        elif ch in "\t\r\x0b\x0c\u00a0":
            out.append(" ")
        elif unicodedata.combining(ch):
            continue
        else:
            out.append("?")
    return "".join(out)[:max_length]
