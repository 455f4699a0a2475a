"""Deterministic answer checking for medical VQA (standard library only).

Every comparison goes through :func:`normalize_answer`: NFKC, casefold, accents
stripped, answer wrappers removed (``\\boxed{..}``, a leading "answer:" / "the
answer is"), punctuation turned into spaces (apostrophes are dropped so "isn't"
becomes "isnt"; decimal points, leading minus signs and thousands separators inside
numbers are kept as numbers), the articles a/an/the removed, number words mapped to
digits ("twenty-one" -> "21") and whitespace collapsed.

:func:`grade_answer` then applies the first rule that fits the reference:

1. ``options`` given (multiple choice): the prediction is resolved to one option by
   letter ("B", "(b)", "Option B", "The answer is B") first, then by option text
   (exact, or the single option phrase it contains), and for a yes/no option pair
   by :func:`parse_yes_no`. It is correct when that option's text equals the
   reference (given as option text, or as a letter).
2. The reference is yes/no (its normalized form is in :data:`YES_WORDS` or
   :data:`NO_WORDS`; for ``answer_type="closed"`` also a leading yes/no word):
   :func:`parse_yes_no` of the prediction must give the same polarity.
3. The reference is a number: the prediction must be, or contain exactly one,
   number of equal value ("2" == "2.0" == "two").
4. Otherwise the normalized texts must be equal.

Hedged predictions never score: "yes and no", "pneumonia or effusion" (two options),
"2 or 3". An empty prediction is never correct. ``recall`` is :func:`token_recall`
(against the resolved option text in the multiple-choice case). No function raises
on string input; ``None`` counts as "".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

__all__ = [
    "YES_WORDS", "NO_WORDS", "GradeResult", "normalize_answer", "parse_yes_no",
    "extract_option_letter", "match_option_text", "token_recall", "grade_answer",
]

YES_WORDS: frozenset[str] = frozenset({
    "yes", "y", "yeah", "yep", "yup", "true", "correct", "present", "positive", "affirmative",
    "seen", "visible", "yes it is", "yes there is", "yes there are", "yes it does", "yes they are",
    "there is", "there are", "it is",
})
NO_WORDS: frozenset[str] = frozenset({
    "no", "n", "nope", "false", "incorrect", "absent", "negative", "none", "nothing", "not",
    "not present", "not seen", "not visible", "no it is not", "no it isnt", "no there is not",
    "no there isnt", "no there are not", "no there arent", "no it does not", "no it doesnt",
    "there is not", "there isnt", "there are not", "there arent", "there is none", "it is not", "it isnt",
})
_LEAD_YES = frozenset({"yes", "yeah", "yep", "yup"})
_LEAD_NO = frozenset({"no", "nope"})

_ARTICLES = frozenset({"a", "an", "the"})
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_PREFIXES = (("final", "answer", "is"), ("final", "answer"), ("answer", "is"), ("answer",))
_DIGITS = frozenset("0123456789")
_APOSTROPHES = dict.fromkeys(map(ord, "'\u2018\u2019\u02bc`\u00b4"))  # str.translate table: delete
_SPECIAL_RE = re.compile(r"[^\w\s]|_")
_NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_THOUSANDS_RE = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_BOXED_RE = re.compile(r"\\boxed\s*\{")


def _unbox(text: str) -> str:
    """Return the content of the last ``\\boxed{...}`` (braces balanced), else ``text``."""
    matches = list(_BOXED_RE.finditer(text))
    if not matches:
        return text
    start = matches[-1].end()
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def _fold(text: str) -> str:
    """NFKC, casefold and strip accents (combining marks)."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return unicodedata.normalize("NFKC", "".join(c for c in text if unicodedata.category(c) != "Mn"))


def _strip_punctuation(text: str) -> str:
    """Punctuation, symbols and control characters become spaces; numbers stay whole."""
    text = _THOUSANDS_RE.sub("", text.translate(_APOSTROPHES))

    def replace(m: re.Match[str]) -> str:
        c, i = m.group(), m.start()
        prev, nxt = (text[i - 1] if i else " "), text[i + 1: i + 3]
        if c == "." and nxt[:1] in _DIGITS and not prev.isalpha():
            return c  # decimal point: "2.5", ".5"
        if c in "-\u2212" and not prev.isalnum() and (nxt[:1] in _DIGITS or (nxt[:1] == "." and nxt[1:] in _DIGITS)):
            return "-"  # leading minus sign: "-3"
        return " " if unicodedata.category(c)[0] in "PSCZ" else c

    return _SPECIAL_RE.sub(replace, text)


def _below_hundred(tokens: list[str], i: int) -> tuple[int, int] | None:
    """Parse "seven", "forty", "forty two" at ``tokens[i]``: ``(value, next_index)``."""
    if i >= len(tokens):
        return None
    if tokens[i] in _UNITS:
        return _UNITS[tokens[i]], i + 1
    if tokens[i] not in _TENS:
        return None
    value, i = _TENS[tokens[i]], i + 1
    if i < len(tokens) and 1 <= _UNITS.get(tokens[i], 0) <= 9:
        return value + _UNITS[tokens[i]], i + 1
    return value, i


def _number_words(tokens: list[str], i: int) -> tuple[int, int] | None:
    """Parse ``[N thousand] [N hundred | hundred] [and] [below-hundred]`` at ``tokens[i]``.

    Returns ``(value, next_index)`` or ``None``. "one two" parses as 1 (then 2), not 3.
    """
    value, j = 0, i
    for scale in ("thousand", "hundred"):
        head = _below_hundred(tokens, j)
        if head and head[0] >= 1 and head[1] < len(tokens) and tokens[head[1]] == scale:
            value, j = value + head[0] * (1000 if scale == "thousand" else 100), head[1] + 1
        elif j < len(tokens) and tokens[j] == scale and j == i and scale == "hundred":
            value, j = 100, j + 1  # "a hundred" (article already dropped)
    k = j + 1 if j > i and j < len(tokens) and tokens[j] == "and" else j
    tail = _below_hundred(tokens, k)
    if tail and (j == i or tail[0] > 0):
        return value + tail[0], tail[1]
    return (value, j) if j > i else None


@functools.lru_cache(maxsize=256)
def _tokens(text: str, drop_articles: bool = True) -> tuple[str, ...]:
    """The normalized tokens behind :func:`normalize_answer` (cached: grading normalizes each text often)."""
    raw = _strip_punctuation(_fold(_unbox(text))).split()
    raw = [t for t in raw if not (drop_articles and t in _ARTICLES)]
    start = 0
    while True:  # strip "answer:", "the answer is", "final answer:" (repeatedly), never all of it
        hit = next((p for p in _PREFIXES if tuple(raw[start:start + len(p)]) == p), None)
        if hit is None or start + len(hit) >= len(raw):
            break
        start += len(hit)
    out: list[str] = []
    i = start
    while i < len(raw):
        parsed = _number_words(raw, i)
        if parsed:
            out.append(str(parsed[0]))
            i = parsed[1]
        else:
            out.append(raw[i])
            i += 1
    return tuple(out)


def normalize_answer(text: str) -> str:
    """Canonical form of an answer for comparison (see the module docstring)."""
    return " ".join(_tokens(text if isinstance(text, str) else ""))


def _key(text: str) -> str:
    """:func:`normalize_answer`, falling back to keeping articles when that is empty (blood type "A")."""
    return normalize_answer(text) or " ".join(_tokens(text if isinstance(text, str) else "", drop_articles=False))


def _synonym(norm: str) -> str | None:
    """"yes"/"no" if the normalized text is one of :data:`YES_WORDS` / :data:`NO_WORDS`."""
    return "yes" if norm in YES_WORDS else "no" if norm in NO_WORDS else None


def parse_yes_no(text: str) -> str | None:
    """"yes", "no", or ``None`` when the text is neither or hedges ("yes and no").

    A whole synonym ("absent", "there isn't") or a leading yes/no word followed by an
    explanation ("No evidence of ...") counts; a leading word whose opposite also
    occurs ("yes and no", "yes, no mass effect") is ambiguous.
    """
    norm = normalize_answer(text)
    if (word := _synonym(norm)) is not None:
        return word
    tokens = norm.split()
    if not tokens:
        return None
    words = set(tokens[1:])
    if tokens[0] in _LEAD_YES:
        return None if words & _LEAD_NO else "yes"
    if tokens[0] in _LEAD_NO:
        return None if words & _LEAD_YES else "no"
    return None


_CI = re.IGNORECASE | re.ASCII  # ASCII: "\u0130" (dotted I) must not match [a-z]
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_ANSWER_PREFIX = re.compile(rf"\s*(?:the\s+)?(?:final\s+|correct\s+)?answer\b\s*(?:is\b)?\s*[:\-]?[\s{_QUOTES}]*", _CI)
_ANSWER_MARK = re.compile(r"\banswer\b\s*(?:is\b)?\s*[:\-]?", _CI)
_LETTER_FULL = re.compile(r"\s*[(\[]?([a-z])[)\]]?[.:]?\s*", _CI)
_LETTER_OPTION = re.compile(r"\s*(?:option|choice)\s*[(\[]?([a-z])[)\]]?(?=$|[\s.:,;)!])", _CI)
_LETTER_LEAD = re.compile(r"\s*(?:\(([a-z])\)|\[([a-z])\]|([a-z])[.):])(?=\s|$)", _CI)
_LETTER_UPPER = re.compile(r"\s*([A-Z])(?=$|[\s.,;:)!])")  # case-sensitive on purpose


def _letter_at(text: str, pos: int, allow_bare_upper: bool) -> str | None:
    """The option letter ``text[pos:]`` starts with, in one of the accepted surface forms."""
    m = _LETTER_FULL.fullmatch(text, pos) or _LETTER_OPTION.match(text, pos) or _LETTER_LEAD.match(text, pos)
    if m is None and allow_bare_upper:
        m = _LETTER_UPPER.match(text, pos)
    return next((g for g in m.groups() if g), None) if m else None


def extract_option_letter(text: str, num_options: int) -> int | None:
    """Index of the option letter the text gives ("B", "(b)", "Option B", "B. Pneumonia", ...).

    Inside a sentence only letters after "answer is"/"answer:" count, and there a bare
    letter followed by more words must be upper case, so the article in "the answer is
    a nodule" is not read as option A. Letters beyond ``num_options`` give ``None``.
    """
    if not isinstance(text, str) or num_options <= 0:
        return None
    cleaned = unicodedata.normalize("NFKC", _unbox(text)).replace("*", " ").strip(" \t\r\n" + _QUOTES)
    pos = 0
    while (m := _ANSWER_PREFIX.match(cleaned, pos)) and m.end() < len(cleaned):
        pos = m.end()  # skip "answer:", "the answer is", "final answer:" ...
    letter = _letter_at(cleaned, pos, allow_bare_upper=False)
    for mark in reversed(list(_ANSWER_MARK.finditer(cleaned)) if letter is None else []):
        if letter := _letter_at(cleaned, mark.end(), allow_bare_upper=True):
            break
    if letter is None:
        return None
    index = ord(letter.lower()) - ord("a")
    return index if index < num_options else None


def match_option_text(text: str, options: Sequence[str]) -> int | None:
    """Index of the option whose normalized text the answer equals, or else uniquely contains.

    When several option phrases occur in the answer, the longest wins only if it
    contains all the others ("no pneumonia" over "pneumonia"); otherwise ``None``.
    """
    keys = [_key(o) for o in options]
    key = _key(text)
    if key and key in keys:
        return keys.index(key)
    padded = f" {normalize_answer(text)} "
    found = {k: i for i, k in reversed(list(enumerate(keys))) if k and f" {k} " in padded}
    if not found:
        return None
    longest = max(found, key=lambda k: (len(k.split()), len(k)))
    if all(f" {k} " in f" {longest} " for k in found):
        return found[longest]
    return None


def token_recall(prediction: str, reference: str) -> float:
    """Share of the distinct normalized reference tokens found in the normalized prediction."""
    ref = set(normalize_answer(reference).split())
    pred = set(normalize_answer(prediction).split())
    if not ref:
        return 0.0 if pred else 1.0
    return len(ref & pred) / len(ref)


@dataclass(frozen=True)
class GradeResult:
    """Outcome of :func:`grade_answer`.

    Attributes:
        correct: Whether the prediction counts as right.
        score: 1.0 if correct else 0.0.
        method: Which rule decided: "option_letter", "option_text", "yes_no", "number", "exact" or "unparsed".
        predicted: The resolved prediction (option text, "yes"/"no", number, or normalized text).
        recall: :func:`token_recall` of the (resolved) prediction against the reference.
    """

    correct: bool
    score: float
    method: str
    predicted: str
    recall: float


def _result(correct: bool, method: str, predicted: str, recall: float) -> GradeResult:
    """A :class:`GradeResult` with ``score`` derived from ``correct``."""
    return GradeResult(correct, 1.0 if correct else 0.0, method, predicted, recall)


def _to_number(norm: str) -> Decimal | None:
    """The value of ``norm`` if it is one number, else of its only number token."""
    found = [t for t in norm.split() if _NUMBER_RE.fullmatch(t)]
    return Decimal(found[0]) if len(found) == 1 else None  # the regex admits only valid literals


def _grade_options(prediction: str, answer: str, options: list[str]) -> GradeResult:
    """Rule 1: resolve the prediction to an option (letter, then text, then yes/no) and compare."""
    keys = [_key(o) for o in options]
    index, method = extract_option_letter(prediction, len(options)), "option_letter"
    if index is None:
        index, method = match_option_text(prediction, options), "option_text"
    if index is None and sorted(keys) == ["no", "yes"] and (yn := parse_yes_no(prediction)):
        index, method = keys.index(yn), "yes_no"
    if index is None:
        return _result(False, "unparsed", "", token_recall(prediction, answer))
    answer_key = _key(answer)
    targets = {i for i, k in enumerate(keys) if answer_key and k == answer_key}
    if not targets and (letter := extract_option_letter(answer, len(options))) is not None:
        targets = {letter}
    reference = options[min(targets)] if targets else answer
    return _result(index in targets, method, options[index], token_recall(options[index], reference))


def _reference_polarity(answer: str, answer_type: str) -> str | None:
    """Whether the reference is a yes/no answer; lenient only for closed questions."""
    return parse_yes_no(answer) if answer_type == "closed" else _synonym(normalize_answer(answer))


def grade_answer(
    prediction: str, answer: str, *, options: Sequence[str] = (), answer_type: str = "open"
) -> GradeResult:
    """Grade ``prediction`` against the reference ``answer`` (rules in the module docstring)."""
    prediction = prediction if isinstance(prediction, str) else ""
    answer = answer if isinstance(answer, str) else ""
    if options:
        return _grade_options(prediction, answer, [o if isinstance(o, str) else str(o) for o in options])
    recall = token_recall(prediction, answer)
    polarity = _reference_polarity(answer, answer_type)
    if polarity is not None:
        said = parse_yes_no(prediction)
        return _result(said == polarity, "yes_no" if said else "unparsed", said or "", recall)
    ref_norm, pred_norm = normalize_answer(answer), normalize_answer(prediction)
    if _NUMBER_RE.fullmatch(ref_norm):
        value = _to_number(pred_norm)
        if value is None:
            return _result(False, "unparsed", pred_norm, recall)
        return _result(value == Decimal(ref_norm), "number", str(value), recall)
    ref_key, pred_key = _key(answer), _key(prediction)
    if not pred_key:
        return _result(False, "unparsed", "", recall)
    return _result(bool(ref_key) and pred_key == ref_key, "exact", pred_key, recall)
