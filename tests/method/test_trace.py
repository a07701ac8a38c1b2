"""Tests of the strict SIF trace format (spec section 1): one good and at least one bad case per rule."""

from __future__ import annotations

import random

import pytest

from sifthinker.method.trace import (
    FULL_IMAGE,
    Box,
    Step,
    Trace,
    TraceFormatError,
    extract_answer,
    extract_areas,
    fmt_num,
    parse,
    render,
    validate,
)

AREA1 = '[{"bbox_2d":[0,0,1,1],"depth":0.5}]'
AREA2 = '[{"bbox_2d":[0.1,0.2,0.3,0.4],"depth":0.25}, {"bbox_2d":[0.5,0.5,0.6,0.7],"depth":1}]'
GOOD = (
    "<think>\n"
    f"<area>{AREA1}</area>\n<text>The whole image.</text>\n"
    f"<area>{AREA2}</area>\n<text>The two cups.</text>\n"
    "</think>\n<answer>two</answer>"
)


def trace_with(area: str = AREA2, text: str = "t", answer: str = "a") -> str:
    """A one-pair trace with the given area content, text and answer."""
    return f"<think><area>{area}</area><text>{text}</text></think><answer>{answer}</answer>"


def box_json(x1="0.1", y1="0.2", x2="0.3", y2="0.4", depth="0.5", extra="") -> str:
    """One-box area content from raw JSON tokens (so the raw number spelling is under test)."""
    return f'[{{"bbox_2d":[{x1},{y1},{x2},{y2}],"depth":{depth}{extra}}}]'


def assert_bad(text: str, fragment: str) -> None:
    """``text`` is invalid, ``fragment`` is in some message, and parse raises the first message."""
    problems = validate(text)
    assert problems, f"expected problems for {text!r}"
    assert any(fragment in p for p in problems), problems
    with pytest.raises(TraceFormatError) as exc:
        parse(text)
    assert str(exc.value) == problems[0]


# ---- the whole canonical trace -------------------------------------------------------------------
def test_good_trace_parses():
    assert validate(GOOD) == []
    t = parse(GOOD)
    assert [s.text for s in t.steps] == ["The whole image.", "The two cups."]
    assert t.answer == "two"
    assert t.steps[0].boxes == (Box(0.0, 0.0, 1.0, 1.0, 0.5),)
    assert t.steps[1].boxes[1] == Box(0.5, 0.5, 0.6, 0.7, 1.0)
    assert t.last_boxes == t.steps[1].boxes
    assert t.first_focus is t.steps[1]


# ---- top-level tags ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fragment",
    [
        (f"<area>{AREA1}</area><text>t</text><answer>a</answer>", "expected exactly one <think>, found 0"),
        (GOOD.replace("</think>", ""), "expected exactly one </think>, found 0"),
        (GOOD.replace("<think>", "<think><think>", 1), "expected exactly one <think>, found 2"),
        (GOOD.replace("<answer>two</answer>", ""), "expected exactly one <answer>, found 0"),
        (GOOD + "<answer>b</answer>", "expected exactly one <answer>, found 2"),
        ("<answer>a</answer>" + GOOD.replace("\n<answer>two</answer>", ""), "tags out of order"),
        (GOOD.replace("<area>", "<Area >", 1), "malformed tag '<Area >'; write '<area>'"),
    ],
)
def test_top_level_tags_bad(text, fragment):
    assert_bad(text, fragment)


def test_whitespace_outside_is_allowed():
    assert validate("\n  " + GOOD.replace("</think>\n", "</think>\n\n\t ") + "\n\n") == []


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Sure! " + GOOD, "text before <think> is not allowed: 'Sure!'"),
        (GOOD.replace("</think>\n", "</think>\nSo: "), "text between </think> and <answer> is not allowed"),
        (GOOD + " Done.", "text after </answer> is not allowed: 'Done.'"),
    ],
)
def test_text_outside_is_rejected(text, fragment):
    assert_bad(text, fragment)


# ---- alternation inside <think> ------------------------------------------------------------------
def test_single_pair_and_many_pairs_are_valid():
    assert validate(trace_with()) == []
    many = "".join(f"<area>{AREA1}</area> \n<text>s{i}</text>\n" for i in range(6))
    assert len(parse(f"<think>{many}</think><answer>x</answer>").steps) == 6


@pytest.mark.parametrize(
    "think, fragment",
    [
        ("", "think: must contain at least one <area>/<text> pair"),
        ("<text>t</text>", "think: expected <area> first, found <text>"),
        (f"<area>{AREA1}</area>", "think: must end with a <text> after the last <area>"),
        (f"<area>{AREA1}</area><text>t</text><area>{AREA1}</area>", "must end with a <text>"),
        (
            f"<area>{AREA1}</area><area>{AREA1}</area><text>t</text>",
            "expected <text> after area 1, found <area>",
        ),
        (f"<area>{AREA1}</area><text>t</text><text>u</text>", "expected <area> after text 1, found <text>"),
        (f"<area>{AREA1}</area> so <text>t</text>", "think: stray text outside <area>/<text>: 'so'"),
        (f"hmm <area>{AREA1}</area><text>t</text>", "stray text outside <area>/<text>: 'hmm'"),
        (f"<area>{AREA1}</area><text>t</text> end", "stray text outside <area>/<text>: 'end'"),
        (f"<area>{AREA1}</area><text>t <area>{AREA1}</area></text>", "tag <area> inside <text>"),
        (f"<area>{AREA1}</area><text>t", "think: <text> is never closed"),
        (f"<area>{AREA1}</area><text>t</text></area>", "</area> without a matching opening tag"),
        (f"<area>{AREA1}</area><text>t</text><answer>", "stray tag <answer> inside <think>"),
    ],
)
def test_think_structure_bad(think, fragment):
    assert_bad(f"<think>{think}</think><answer>a</answer>", fragment)


def test_tags_inside_answer_are_rejected():
    assert_bad(trace_with(answer="<text>a</text>"), "answer: stray tag <text> inside <answer>")


# ---- area JSON -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "area, fragment",
    [
        ("[{'bbox_2d': [0,0,1,1]}]", "area 1: invalid JSON"),
        ('{"bbox_2d":[0,0,1,1],"depth":0.5}', "area 1: must be a JSON list of boxes, got dict"),
        ("[]", "area 1: the box list is empty"),
        ("[[0,0,1,1]]", "area 1: box 1: must be an object with keys bbox_2d and depth"),
        ('[{"bbox_2d":[0,0,1,1]}]', "area 1: box 1: missing key 'depth'"),
        ('[{"depth":0.5}]', "area 1: box 1: missing key 'bbox_2d'"),
        (box_json(extra=',"label":"cup"'), "area 1: box 1: unexpected key 'label'"),
        ('[{"bbox_2d":[0,0,1],"depth":0.5}]', "area 1: box 1: bbox_2d must be a list of 4 numbers"),
        ('[{"bbox_2d":[0,0,1,1,1],"depth":0.5}]', "bbox_2d must be a list of 4 numbers"),
        (box_json(x1='"0.1"'), 'area 1: box 1: x1 must be a number, got "0.1"'),
        (box_json(depth="null"), "area 1: box 1: depth must be a number, got null"),
        (box_json(depth="[0.5]"), "depth must be a number, got a JSON list"),
    ],
)
def test_area_json_bad(area, fragment):
    assert_bad(trace_with(area=area), fragment)


def test_several_boxes_in_one_area_are_valid():
    assert len(parse(trace_with(area=AREA2)).steps[0].boxes) == 2


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"x1": "true"}, "area 1: box 1: x1 must be a number, got true"),
        ({"depth": "false"}, "area 1: box 1: depth must be a number, got false"),
        ({"x2": "1.5"}, "area 1: box 1: x2 (1.5) must be in [0, 1]"),
        ({"x1": "-0.1"}, "area 1: box 1: x1 (-0.1) must be in [0, 1]"),
        ({"depth": "1.2"}, "area 1: box 1: depth (1.2) must be in [0, 1]"),
        ({"y2": "2"}, "y2 (2) must be in [0, 1]"),
        ({"depth": "NaN"}, "depth must be a finite number, got NaN"),
        ({"x2": "Infinity"}, "x2 must be a finite number, got Infinity"),
        ({"x1": "0.1234"}, "area 1: box 1: x1 (0.1234) has more than 3 decimals"),
        ({"depth": "0.1000"}, "depth (0.1000) has more than 3 decimals"),
        ({"x1": "1e-4"}, "x1 (1e-4) must be written as a plain decimal, without an exponent"),
        ({"y1": "2E-1"}, "y1 (2E-1) must be written as a plain decimal"),
        ({"x1": "0.3", "x2": "0.1"}, "area 1: box 1: x2 (0.1) must be greater than x1 (0.3)"),
        ({"x1": "0.3", "x2": "0.3"}, "x2 (0.3) must be greater than x1 (0.3)"),
        ({"y1": "0.5", "y2": "0.4"}, "area 1: box 1: y2 (0.4) must be greater than y1 (0.5)"),
    ],
)
def test_numbers_bad(kwargs, fragment):
    assert_bad(trace_with(area=box_json(**kwargs)), fragment)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"x1": "0", "y1": "0", "x2": "1", "y2": "1"},
        {"x2": "1.0", "depth": "1.000"},
        {"depth": "0.125"},
        {"x1": "0.001", "depth": "0"},
        {"depth": "0.5"},
    ],
)
def test_numbers_good(kwargs):
    assert validate(trace_with(area=box_json(**kwargs))) == []


def test_message_names_area_and_box_index():
    bad_second = AREA2.replace("[0.5,0.5,0.6,0.7]", "[0.5,0.5,0.6,0.4]")
    text = f"<think><area>{AREA1}</area><text>a</text><area>{bad_second}</area><text>b</text></think><answer>c</answer>"
    assert validate(text) == ["area 2: box 2: y2 (0.4) must be greater than y1 (0.5)"]
    text2 = trace_with(area=box_json(x1="0.3", x2="0.1"))
    assert validate(text2.replace("<area>", f"<area>{AREA1}</area><text>x</text><area>")) == [
        "area 2: box 1: x2 (0.1) must be greater than x1 (0.3)"
    ]


# ---- texts and answer ----------------------------------------------------------------------------
def test_texts_and_answer_are_stripped():
    t = parse(trace_with(text="  spaced out \n", answer="\n yes "))
    assert t.steps[0].text == "spaced out" and t.answer == "yes"


@pytest.mark.parametrize(
    "text, fragment",
    [
        (trace_with(text=""), "text 1 is empty"),
        (trace_with(text=" \n\t"), "text 1 is empty"),
        (GOOD.replace("The two cups.", "  "), "text 2 is empty"),
        (trace_with(answer=""), "answer is empty"),
        (trace_with(answer="   "), "answer is empty"),
    ],
)
def test_empty_texts_bad(text, fragment):
    assert_bad(text, fragment)


# ---- validate vs parse ---------------------------------------------------------------------------
def test_validate_lists_all_problems_in_document_order():
    text = "x " + trace_with(area=box_json(x1="0.1234", depth="2"), text=" ", answer="")
    problems = validate(text)
    assert problems == [
        "text before <think> is not allowed: 'x'",
        "area 1: box 1: x1 (0.1234) has more than 3 decimals",
        "area 1: box 1: depth (2) must be in [0, 1]",
        "text 1 is empty",
        "answer is empty",
    ]
    # callers that catch ValueError (config-style handlers) get parse's error, with the first problem
    with pytest.raises(ValueError) as exc:
        parse(text)
    assert type(exc.value) is TraceFormatError and str(exc.value) == problems[0]


@pytest.mark.parametrize("seed", range(3))
def test_validate_never_raises_on_garbage(seed):
    rng = random.Random(seed)
    pieces = "<think> </think> <answer> </answer> <area> </area> <text> </text> [ ] { } , x < 0.5 1e5".split()
    pieces += ['"bbox_2d":', '"depth":', " ", "9" * 500]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        problems = validate(text)
        # validate and parse agree: no problems <=> parse succeeds; else parse raises the first problem
        if problems:
            assert all(p.strip() for p in problems), problems
            with pytest.raises(TraceFormatError) as exc:
                parse(text)
            assert str(exc.value) == problems[0]
        else:
            assert parse(render(parse(text))) == parse(text)
        answer = extract_answer(text)
        assert answer is None or (answer == answer.strip() and answer in text)
        assert extract_areas(text) == []  # no sequence of these pieces forms a whole box with a depth
    assert validate("<think><area>" + "[" * 5000 + "</area><text>t</text></think><answer>a</answer>")
    assert validate(None) == ["trace must be a string, got NoneType"]  # type: ignore[arg-type]


# ---- render --------------------------------------------------------------------------------------
def test_fmt_num():
    cases = {0: "0", 1: "1", 0.5: "0.5", 0.25: "0.25", 0.125: "0.125", 0.1234: "0.123", 0.9996: "1"}
    cases |= {1.0: "1", -0.0001: "0", 0.10: "0.1", 0.0005: "0.001"}
    assert {v: fmt_num(v) for v in cases} == cases


def test_render_canonical_text():
    t = Trace((Step((Box(0, 0, 1, 1, 0.5),), "all"), Step((Box(0.1, 0.2, 0.3, 0.4, 0.25),), "cup")), "yes")
    assert render(t) == (
        '<think>\n<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>all</text>\n'
        '<area>[{"bbox_2d":[0.1,0.2,0.3,0.4],"depth":0.25}]</area>\n<text>cup</text>\n'
        "</think>\n<answer>yes</answer>"
    )
    assert parse(render(t)) == Trace(
        (Step((Box(0.0, 0.0, 1.0, 1.0, 0.5),), "all"), Step((Box(0.1, 0.2, 0.3, 0.4, 0.25),), "cup")), "yes"
    )


def test_render_parse_round_trip_random():
    rng = random.Random(0)
    for _ in range(200):
        steps = []
        for _ in range(rng.randint(1, 5)):
            boxes = []
            for _ in range(rng.randint(1, 4)):
                # Integer thousandths, so x2 > x1 holds exactly after division.
                i1, j1 = rng.randint(0, 999), rng.randint(0, 999)
                i2, j2 = rng.randint(i1 + 1, 1000), rng.randint(j1 + 1, 1000)
                boxes.append(Box(i1 / 1000, j1 / 1000, i2 / 1000, j2 / 1000, rng.randint(0, 1000) / 1000))
            steps.append(Step(tuple(boxes), rng.choice(["a", "the cup < the mug", "x\ny", 'say "hi"'])))
        t = Trace(tuple(steps), rng.choice(["yes", "3", "left side"]))
        assert parse(render(t)) == t
    assert parse(render(parse(GOOD))) == parse(GOOD)


def test_render_rounds_and_rejects_invalid():
    t = Trace((Step((Box(0.12345, 0, 0.5, 0.5, 0.33333),), " a "),), " b ")
    assert parse(render(t)) == Trace((Step((Box(0.123, 0.0, 0.5, 0.5, 0.333),), "a"),), "b")
    for bad in (
        Trace((), "a"),
        Trace((Step((Box(0, 0, 1, 1, 0.5),), " "),), "a"),
        Trace((Step((Box(0, 0, 1, 1, 0.5),), "t"),), ""),
        Trace((Step((Box(0.5, 0, 0.5004, 1, 0.5),), "t"),), "a"),  # x2 == x1 after rounding
        Trace((Step((Box(0, 0, 1.2, 1, 0.5),), "t"),), "a"),
        Trace((Step((), "t"),), "a"),
        Trace((Step((Box(0, 0, 1, 1, 0.5),), "see <area>"),), "a"),
    ):
        with pytest.raises(TraceFormatError, match="cannot render"):
            render(bad)


# ---- Trace helpers -------------------------------------------------------------------------------
def test_first_focus_and_last_boxes():
    full = Box(*FULL_IMAGE, 0.4)
    cup = Box(0.1, 0.1, 0.2, 0.2, 0.3)
    assert full.is_full_image() and not cup.is_full_image() and full.xyxy() == FULL_IMAGE
    assert Trace((Step((full,), "a"), Step((cup,), "b")), "x").first_focus == Step((cup,), "b")
    # Full image together with another box is not "exactly the single full-image box".
    assert Trace((Step((full, cup), "a"),), "x").first_focus == Step((full, cup), "a")
    assert Trace((Step((full,), "a"), Step((full,), "b")), "x").first_focus is None
    assert Trace((), "x").first_focus is None and Trace((), "x").last_boxes == ()


# ---- lenient extraction --------------------------------------------------------------------------
def test_extract_answer():
    assert extract_answer(GOOD) == "two"
    assert extract_answer("junk <answer> a </answer> more <answer>b</answer> tail") == "b"
    assert extract_answer("<answer>a<answer> b</answer>") == "b"
    assert extract_answer("<think>no answer</think>") is None
    assert extract_answer("<answer>unterminated") is None
    assert extract_answer("</answer><answer>") is None
    assert extract_answer("<answer> </answer>") == ""


def test_extract_areas_is_lenient():
    text = (
        "preamble <area>" + box_json(x1="0.1234", x2="1.5") + "</area>"  # out-of-format numbers: kept
        "<area>not json</area>"  # skipped
        '<area>{"bbox_2d":[1,2,3,4],"depth":0.5,"label":"cup"}</area>'  # lone object: kept
        "<area>[]</area>"  # empty: skipped
        '<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}, {"bbox_2d":[0,0,1],"depth":0.5}]</area>'  # one bad: skipped
        '<area>[{"bbox_2d":[0,0,true,1],"depth":0.5}]</area>'  # boolean: skipped
        '<area>[{"bbox_2d":[0,0,1,1],"depth":NaN}]</area>'  # non-finite: skipped
        "<area><area>" + AREA1 + "</area>"  # inner list is read
    )
    assert extract_areas(text) == [
        [Box(0.1234, 0.2, 1.5, 0.4, 0.5)],
        [Box(1.0, 2.0, 3.0, 4.0, 0.5)],
        [Box(0.0, 0.0, 1.0, 1.0, 0.5)],
    ]
    assert extract_areas(GOOD) == [list(s.boxes) for s in parse(GOOD).steps]
    assert extract_areas("nothing") == []
