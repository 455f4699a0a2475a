"""Table-driven tests for medvr_env.grading (deterministic answer checking)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from medvr_env.grading import (
    NO_WORDS,
    YES_WORDS,
    GradeResult,
    extract_option_letter,
    grade_answer,
    match_option_text,
    normalize_answer,
    parse_yes_no,
    token_recall,
)

OPTIONS = ("Pneumonia", "No pneumonia", "Pleural effusion", "Left upper lobe")
BLOOD = ("A", "B", "AB", "O")


# --------------------------------------------------------------------------- normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Liver.", "liver"),
        ("  an   Enlarged\tHEART  ", "enlarged heart"),
        ("Answer: left lung", "left lung"),
        ("The answer is: \"Right kidney\".", "right kidney"),
        ("Final answer: CT", "ct"),
        ("answer: answer is liver", "liver"),
        ("The answer is", "answer is"),  # a wrapper is never stripped down to nothing
        ("final answer", "final answer"),
        ("\\boxed{Twenty-One}", "21"),
        ("The answer is \\boxed{\\text{MRI}}", "text mri"),
        ("two", "2"),
        ("twenty one", "21"),
        ("one hundred and five", "105"),
        ("a hundred", "100"),
        ("one two", "1 2"),
        ("2.5 cm", "2.5 cm"),
        ("2.5.", "2.5"),
        ("-3", "-3"),
        ("1,000 mm", "1000 mm"),
        ("Crohn's disease", "crohns disease"),
        ("Café-au-lait", "cafe au lait"),
        ("ＣＴ", "ct"),  # full-width letters (NFKC)
        ("x-ray", "x ray"),
        ("", ""),
        ("a", ""),
        ("?!...", ""),
        ("line\x00break\u200b", "line break"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_normalize_answer_non_str_is_empty() -> None:
    assert normalize_answer(None) == ""  # type: ignore[arg-type]


# --------------------------------------------------------------------------- yes / no


def test_yes_and_no_sets_are_disjoint_and_normalized() -> None:
    assert not YES_WORDS & NO_WORDS
    assert all(normalize_answer(w) == w for w in YES_WORDS | NO_WORDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("y", "yes"),
        ("TRUE", "yes"),
        ("Present.", "yes"),
        ("positive", "yes"),
        ("Yes, it is", "yes"),
        ("there is", "yes"),
        ("yes, there is a nodule", "yes"),
        ("Yeah - the lesion enhances", "yes"),
        ("no", "no"),
        ("N", "no"),
        ("False", "no"),
        ("absent", "no"),
        ("None", "no"),
        ("not present", "no"),
        ("There isn't.", "no"),
        ("there is not", "no"),
        ("No evidence of pneumothorax", "no"),
        ("no, the heart is normal", "no"),
        ("yes and no", None),
        ("No... yes", None),
        ("yes, no mass effect", None),
        ("maybe", None),
        ("the liver", None),
        ("", None),
        ("nodule, yes", None),  # only a *leading* yes/no word counts
    ],
)
def test_parse_yes_no(text: str, expected: str | None) -> None:
    assert parse_yes_no(text) == expected


# --------------------------------------------------------------------------- option letters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", 1),
        ("b", 1),
        ("(B)", 1),
        ("B.", 1),
        ("B)", 1),
        ("[C]", 2),
        ("Option B", 1),
        ("option (d)", 3),
        ("Answer: B", 1),
        ("The answer is (b)", 1),
        ("The correct answer is C.", 2),
        ("B. Pneumonia", 1),
        ("(A) Pneumonia", 0),
        ("**D**", 3),
        ("\\boxed{C}", 2),
        ("I think the answer is B because of the opacity.", 1),
        ("A", 0),
        ("a", 0),
        ("E", None),  # beyond four options
        ("Option F", None),
        ("a nodule in the left lung", None),  # the article is not a letter
        ("The answer is a nodule", None),
        ("there is a mass", None),
        ("Pneumonia", None),
        ("", None),
    ],
)
def test_extract_option_letter(text: str, expected: int | None) -> None:
    assert extract_option_letter(text, 4) == expected


def test_extract_option_letter_without_options() -> None:
    assert extract_option_letter("A", 0) is None


# --------------------------------------------------------------------------- option text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pneumonia", 0),
        ("PNEUMONIA.", 0),
        ("No pneumonia", 1),
        ("There is no pneumonia here", 1),  # longest phrase subsumes "pneumonia"
        ("I see a pleural effusion", 2),
        ("a left upper lobe mass", 3),
        ("pneumonia and pleural effusion", None),  # hedging over two options
        ("upper lobe", None),  # a part of an option is not the option
        ("pneumonias", None),  # whole words only
        ("cardiomegaly", None),
        ("", None),
    ],
)
def test_match_option_text(text: str, expected: int | None) -> None:
    assert match_option_text(text, OPTIONS) == expected


# --------------------------------------------------------------------------- token recall


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("upper lobe", "left upper lobe", 2 / 3),
        ("The left upper lobe.", "left upper lobe", 1.0),
        ("mass in the left upper lobe", "left upper lobe", 1.0),  # extra predicted words cost nothing
        ("lobe lobe lobe", "left upper lobe", 1 / 3),  # repeated tokens count once
        ("right lower lobe", "left upper lobe", 1 / 3),
        ("kidney", "liver", 0.0),
        ("two nodules", "2 nodules", 1.0),
        ("", "", 1.0),
        ("liver", "", 0.0),
        ("", "liver", 0.0),
    ],
)
def test_token_recall(prediction: str, reference: str, expected: float) -> None:
    assert token_recall(prediction, reference) == pytest.approx(expected)


# --------------------------------------------------------------------------- grade_answer


@pytest.mark.parametrize(
    ("prediction", "answer", "kwargs", "correct", "method"),
    [
        # multiple choice by letter and by text
        ("B", "No pneumonia", {"options": OPTIONS}, True, "option_letter"),
        ("(b)", "No pneumonia", {"options": OPTIONS}, True, "option_letter"),
        ("The answer is D.", "Left upper lobe", {"options": OPTIONS}, True, "option_letter"),
        ("A", "No pneumonia", {"options": OPTIONS}, False, "option_letter"),
        ("E", "No pneumonia", {"options": OPTIONS}, False, "unparsed"),
        ("no pneumonia", "No pneumonia", {"options": OPTIONS}, True, "option_text"),
        ("pneumonia", "No pneumonia", {"options": OPTIONS}, False, "option_text"),
        ("pleural effusion or pneumonia", "Pneumonia", {"options": OPTIONS}, False, "unparsed"),
        ("B", "B", {"options": OPTIONS}, True, "option_letter"),  # reference given as a letter
        ("no pneumonia", "b", {"options": OPTIONS}, True, "option_text"),
        ("A", "A", {"options": BLOOD}, True, "option_letter"),
        ("AB", "AB", {"options": BLOOD}, True, "option_text"),
        ("a nodule", "A", {"options": BLOOD}, False, "unparsed"),
        ("Yes, there is a nodule", "Yes", {"options": ("Yes", "No")}, True, "option_text"),
        ("Absent", "No", {"options": ("Yes", "No")}, True, "yes_no"),
        ("Two", "2", {"options": ("1", "2", "3")}, True, "option_text"),
        # yes / no
        ("yes", "Yes", {}, True, "yes_no"),
        ("Yes, the nodule is calcified", "yes", {}, True, "yes_no"),
        ("present", "yes", {}, True, "yes_no"),
        ("no", "yes", {}, False, "yes_no"),
        ("yes and no", "yes", {}, False, "unparsed"),
        ("no evidence of it", "No", {}, True, "yes_no"),
        ("None", "no", {}, True, "yes_no"),
        ("yes", "Yes, it is enlarged", {"answer_type": "closed"}, True, "yes_no"),
        ("yes", "Yes, it is enlarged", {}, False, "exact"),  # open: not a yes/no reference
        # numbers
        ("two", "2", {}, True, "number"),
        ("2.0", "two", {}, True, "number"),
        ("There are 2 nodules.", "2", {}, True, "number"),
        ("3", "2", {}, False, "number"),
        ("2 or 3", "2", {}, False, "unparsed"),
        ("several", "2", {}, False, "unparsed"),
        ("twenty-one", "21", {}, True, "number"),
        # open answers
        ("The Liver.", "liver", {}, True, "exact"),
        ("\\boxed{Left Lung}", "left lung", {}, True, "exact"),
        ("Answer: an X-ray", "x ray", {}, True, "exact"),
        ("left lung", "right lung", {}, False, "exact"),
        ("liver and spleen", "liver", {}, False, "exact"),
        ("A", "A", {}, True, "exact"),  # blood type: the lone article-letter still matches
        ("", "liver", {}, False, "unparsed"),
        ("liver", "", {}, False, "exact"),
        ("", "", {}, False, "unparsed"),
        (None, "yes", {}, False, "unparsed"),
    ],
)
def test_grade_answer(prediction: str, answer: str, kwargs: dict, correct: bool, method: str) -> None:
    result = grade_answer(prediction, answer, **kwargs)
    assert (result.correct, result.method) == (correct, method)
    assert result.score == (1.0 if correct else 0.0)


def test_grade_result_fields() -> None:
    result = grade_answer("B. Pneumonia", "No pneumonia", options=OPTIONS)
    assert result == GradeResult(correct=True, score=1.0, method="option_letter", predicted="No pneumonia", recall=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.correct = False  # type: ignore[misc]


def test_grade_recall_is_filled_for_open_answers() -> None:
    result = grade_answer("upper lobe", "left upper lobe")
    assert not result.correct
    assert result.recall == pytest.approx(2 / 3)
    assert result.predicted == "upper lobe"


def test_grade_recall_uses_option_text_for_letters() -> None:
    assert grade_answer("B", "b", options=OPTIONS).recall == 1.0
    assert grade_answer("A", "No pneumonia", options=OPTIONS).recall == pytest.approx(1 / 2)


def test_grade_number_prediction_is_canonical_value() -> None:
    assert grade_answer("There are twenty one", "21").predicted == "21"


# --------------------------------------------------------------------------- properties

TEXT = st.text(max_size=200) | st.sampled_from(
    ["", "\\boxed{", "answer:", "a", "the answer is", "B.", "yes and no", "-.5", "two thousand and", "n"]
)


@settings(max_examples=300, deadline=None)
@given(prediction=TEXT, answer=TEXT, options=st.lists(st.text(max_size=30), max_size=5), closed=st.booleans())
def test_grade_answer_never_raises(prediction: str, answer: str, options: list[str], closed: bool) -> None:
    result = grade_answer(prediction, answer, options=options, answer_type="closed" if closed else "open")
    assert isinstance(result, GradeResult)
    assert result.score == (1.0 if result.correct else 0.0)
    assert 0.0 <= result.recall <= 1.0
    if not prediction.strip():
        assert not result.correct  # an empty prediction never scores


# grade_answer(x, x) holds for every x whose normalization is non-empty, with no further
# restriction: a yes/no reference is looked up in the same synonym sets that
# parse_yes_no checks first, a numeric reference is one number token on both sides, and
# otherwise the normalized texts are identical. For answer_type="closed" the reference is
# parsed with the same parse_yes_no as the prediction. (Without options: no letter rules.)
@settings(max_examples=500, deadline=None)
@given(text=TEXT, closed=st.booleans())
def test_grade_answer_is_reflexive(text: str, closed: bool) -> None:
    assume(normalize_answer(text) != "")
    assert grade_answer(text, text, answer_type="closed" if closed else "open").correct


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_normalize_answer_is_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(once) == once
