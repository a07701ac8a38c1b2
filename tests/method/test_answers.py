"""Tests for the deterministic answer verifier and the fake judge (sifthinker.method.answers).

The HTTP judge (sifthinker.rewards.judge) is tested against a real local server in tests/rewards/test_judge.py.
"""

from __future__ import annotations

import json

import pytest

from sifthinker.method.answers import (
    FakeJudge,
    canonical_answer_type,
    infer_answer_type,
    normalize,
    score_answer,
)


def test_normalize() -> None:
    assert normalize("  Yes, it IS.  ") == "yes it is"
    assert normalize("3.5 (approx)") == "3.5 approx"
    assert normalize("1,000 cars") == "1000 cars"
    assert normalize(None) == ""


@pytest.mark.parametrize(
    ("gt", "kind"),
    [
        ("yes", "yes_no"),
        ("False", "yes_no"),
        ("3", "number"),
        ("three", "number"),
        ("B", "option"),
        ("(C)", "option"),
        ("B. red cube", "option"),
        ("grey", "color"),
        ("dark red", "color"),
        ("red cube", "name"),
        ("A red cube", "name"),
        ("the cube sits on the table left of a large green sphere", "free"),
    ],
)
def test_infer_answer_type(gt: str, kind: str) -> None:
    assert infer_answer_type(gt) == kind


def test_canonical_answer_type() -> None:
    assert canonical_answer_type("count") == "number"
    assert canonical_answer_type("Colour") == "color"
    unknown = r"^unknown answer_type 'essay'; expected one of \('yes_no', 'number', 'option', 'color', 'name', 'free'\)$"
    with pytest.raises(ValueError, match=unknown):
        canonical_answer_type("essay")
    with pytest.raises(ValueError, match=unknown):  # an explicit type is never silently replaced by a guess
        score_answer("yes", "yes", "essay")


@pytest.mark.parametrize("gt", ["yes", "3", "B", "red", "red cube", "free text"])
def test_missing_answer_is_wrong(gt: str) -> None:
    # E1/E4: None (no <answer>) and blank answers score 0, whatever the type.
    assert score_answer(None, gt) == 0.0
    assert score_answer("   ", gt) == 0.0


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("Yes, it is.", "yes", 1.0),
        ("yes", "Yes", 1.0),
        ("True", "yes", 1.0),
        ("no", "yes", 0.0),
        ("No, it is not.", "no", 1.0),
        ("false", "no", 1.0),
        ("Yes, there is no doubt.", "yes", 1.0),
        ("There is no cube.", "no", 1.0),
        ("yes or no", "yes", 1.0),
        ("maybe", "yes", 0.0),
        ("It could be true or false", "yes", 0.0),
    ],
)
def test_yes_no(pred: str, gt: str, expected: float) -> None:
    assert score_answer(pred, gt, "yes_no") == expected


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("3", "3", 1.0),
        ("3 objects", "3", 1.0),
        ("there are three", "3", 1.0),
        ("Three.", "3", 1.0),
        ("3", "three", 1.0),
        ("4", "3", 0.0),
        ("twenty", "20", 1.0),
        ("3.0", "3", 1.0),
        ("2 or 3", "3", 0.0),  # leading 2 wins: the hedge is not rewarded
        ("there are 2 or 3", "3", 0.0),  # two different numbers, no leading one: ambiguous
        ("3 cubes, 3 in total", "3", 1.0),
        ("the one on the left has 3", "3", 1.0),
        ("none", "0", 1.0),
        ("no idea", "0", 0.0),
        ("many", "3", 0.0),
    ],
)
def test_number(pred: str, gt: str, expected: float) -> None:
    assert score_answer(pred, gt, "number") == expected


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        ("B", 1.0),
        ("(B)", 1.0),
        ("B.", 1.0),
        ("B)", 1.0),
        ("Option B", 1.0),
        ("option b", 1.0),
        ("b", 1.0),
        ("The answer is B.", 1.0),
        ("(b) red cube", 1.0),
        ("b. red cube", 1.0),
        ("A", 0.0),
        ("C", 0.0),
        # E2: the original accepted any answer containing the letter. Here every option letter the answer
        # names counts, and negation is not interpreted: "not A but B" names A and B, so it is ambiguous
        # and scores 0 (a policy must not learn to list letters).
        ("The answer is not A but B", 0.0),
        ("A or B", 0.0),
        ("A, B, C", 0.0),
        # The letter is not a substring test: words containing "b" do not name option B.
        ("blue ball", 0.0),
        ("the big box", 0.0),
        # A sentence-initial capital "A" before a word is the article, so B is the only letter.
        ("A cube, so B", 1.0),
    ],
)
def test_option_strict_letters(pred: str, expected: float) -> None:
    assert score_answer(pred, "B", "option") == expected


def test_option_by_text() -> None:
    opts = {"A": "blue sphere", "B": "red cube", "C": "cube"}
    assert score_answer("the red cube", "B", "option", options=opts) == 1.0
    assert score_answer("red cubes", "B", "option", options=opts) == 1.0
    # "cube" inside "red cube" is part of option B, not a mention of option C.
    assert score_answer("the cube", "C", "option", options=opts) == 1.0
    assert score_answer("red cube", "C", "option", options=opts) == 0.0
    assert score_answer("red cube or blue sphere", "B", "option", options=opts) == 0.0
    assert score_answer("A red cube", "B", "option", options=opts) == 1.0  # article, then text
    # Options given as letters; the ground truth may also be the option's text.
    assert score_answer("B", "red cube", "option", options=opts) == 1.0
    # A letter wins over a conflicting text.
    assert score_answer("A. red cube", "B", "option", options=opts) == 0.0
    # Without options only the ground truth's own text is known.
    assert score_answer("red cube", "B. red cube", "option") == 1.0
    assert score_answer("blue sphere", "B. red cube", "option") == 0.0


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("red", "red", 1.0),
        ("It is grey.", "gray", 1.0),
        ("gray", "grey", 1.0),
        ("Red.", "red", 1.0),
        ("dark red", "red", 1.0),
        ("blue", "red", 0.0),
        ("red and blue", "red", 0.0),
        ("white and red", "red and white", 1.0),
        ("no colour", "red", 0.0),
    ],
)
def test_color(pred: str, gt: str, expected: float) -> None:
    assert score_answer(pred, gt, "color") == expected


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        ("red cube", 1.0),
        ("The Red Cube.", 1.0),
        ("the red cube is closer", 1.0),
        ("red cubes", 1.0),
        ("It is the red cube", 1.0),
        ("cube", 0.0),
        ("red sphere", 0.0),
        ("cube red", 0.0),
        ("the red cube, not the blue sphere", 0.0),
        ("red cube and blue sphere", 0.0),
        ("the red cube is closer than the blue sphere", 0.0),
        ("red cube or red cube", 0.0),
    ],
)
def test_name_without_candidates(pred: str, expected: float) -> None:
    assert score_answer(pred, "red cube", "name") == expected


def test_name_with_candidates() -> None:
    cands = ["red cube", "blue sphere", "cube"]
    assert score_answer("the red cube is nearest", "red cube", "name", candidates=cands) == 1.0
    assert score_answer("red cube, blue sphere", "red cube", "name", candidates=cands) == 0.0
    # "cube" is part of the ground-truth name here, so it is not another candidate...
    assert score_answer("red cube", "red cube", "name", candidates=cands) == 1.0
    # ...but a ground truth "cube" inside a longer candidate "red cube" is that other object.
    assert score_answer("red cube", "cube", "name", candidates=cands) == 0.0


def test_free_without_judge_is_exact_match() -> None:
    assert score_answer("The cat sleeps", "the cat sleeps.", "free") == 1.0
    assert score_answer("a cat is sleeping", "the cat sleeps", "free") == 0.0


def test_inferred_types_score_only_the_right_answer() -> None:
    # every (prediction, ground truth) pair with the type inferred from the ground truth: the verifier is
    # binary, and a prediction scores 1 only for its own ground truth ("red cube" names the colour red)
    preds = ["", "x", "yes", "3", "B", "red", "red cube", "<answer>", "\u00e9\u00e8 \u4e2d\u6587"]
    gts = ["yes", "3", "B", "red", "red cube", "long free text answer about the scene here"]
    right = {("yes", "yes"), ("3", "3"), ("B", "B"), ("red", "red"), ("red cube", "red"), ("red cube", "red cube")}
    scores = {(p, g): score_answer(p, g) for p in preds for g in gts}
    assert scores == {pair: 1.0 if pair in right else 0.0 for pair in scores}


# ---- the fake judge ---------------------------------------------------------------------------------


def test_fake_judge_is_the_verifier() -> None:
    judge = FakeJudge()
    assert judge.score("q", "The cat sleeps.", "the cat sleeps") == 1.0
    assert judge.score("q", None, "x") == 0.0
    assert FakeJudge(answer_type=None).score("q", "three", "3") == 1.0
    # every call is recorded in order, missing predictions too, as plain JSON-able data
    assert judge.calls == [("q", "The cat sleeps.", "the cat sleeps"), ("q", None, "x")]
    assert json.loads(json.dumps(judge.calls)) == [["q", "The cat sleeps.", "the cat sleeps"], ["q", None, "x"]]
