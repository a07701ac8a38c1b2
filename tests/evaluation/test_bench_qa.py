"""The question-answering benchmark adapters (SpatialBench, CV-Bench, V*, SAT) and their shared parsing.

Each adapter loads its hand-written fixture (tests/fixtures/benchmarks/<name>/, the published layout) and
scores hand-written responses twice: strict, and original (the SIFThinker scripts' rules, E1-E5), with the
expected numbers worked out by hand in the comments.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sifthinker.evaluation.benchmarks import Item, ItemResult, Scoring, get_benchmark
from sifthinker.evaluation.benchmarks.base import wilson
from sifthinker.evaluation.benchmarks.cvbench import cambrian_letter
from sifthinker.evaluation.benchmarks.parsing import (
    Unit,
    contains_word,
    mc_prompt,
    original_answer,
    parse_answer,
    parse_option,
    split_lettered,
    summarize,
)
from sifthinker.evaluation.benchmarks.sat import SATBenchmark
from sifthinker.method.trace import validate

FIXTURES = Path(__file__).parents[1] / "fixtures" / "benchmarks"
THINK = '<think>\n<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>Looking at the whole scene.</text>\n</think>'
NO_ANSWER = THINK  # a response cut off before its <answer>


def sif(answer: str) -> str:
    return f"{THINK}\n<answer>{answer}</answer>"


def copy_fixture(tmp_path: Path, name: str) -> Path:
    """A writable copy: CV-Bench and SAT write images beside the data, never into the repository."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def test_sif_helper_builds_valid_traces() -> None:
    assert validate(sif("B")) == []
    assert validate(NO_ANSWER) != []


# ---- parsing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (sif("  Yes \n"), "Yes"),
        (sif("B") + "\nthanks", "B"),  # only the answer block is judged here; trace validity is elsewhere
        ("<answer>3</answer>", "3"),
        (NO_ANSWER, None),
        (THINK + "\n<answer>B", None),  # truncated
        (THINK + "\nB</answer>", None),
        (sif("A") + "<answer>B</answer>", None),  # two answers: ambiguous
        (THINK + "\n<Answer>B</Answer>", None),  # not the format's tag
        ("</answer>B<answer>", None),
        (sif("<area>[]</area> B"), None),  # a SIF tag inside the answer
        (sif("   "), None),
        (None, None),
        (42, None),
    ],
)
def test_parse_answer(response: object, expected: str | None) -> None:
    assert parse_answer(response) == expected


def test_original_answer_reads_the_first_block_leniently() -> None:
    assert original_answer("<answer>\nA\n</answer> x <answer>B</answer>") == "A"
    assert original_answer("<answer>  </answer>") == ""
    assert original_answer(sif("<text>x</text> C")) == "<text>x</text> C"
    assert original_answer(NO_ANSWER) is None
    assert original_answer(None) is None


OPTS = {"A": "blue", "B": "red", "C": "green"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"), ("b", "B"), ("(B)", "B"), ("(b)", "B"), ("B.", "B"), ("B)", "B"), (" B ", "B"), ("(B).", "B"),
        ("red", "B"), ("Red.", "B"), ("  RED ", "B"), ("(B) red", "B"), ("B. Red", "B"), ("B) red", "B"),
        ("(B) blue", None),  # letter and text disagree
        ("A red", None),  # article or option A? not a form we read
        ("B or C", None), ("the red one", None), ("D", None), ("(D)", None), ("B:", None), ("", None), (None, None),
    ],
)
def test_parse_option(answer: str | None, expected: str | None) -> None:
    assert parse_option(answer, OPTS) == expected


def test_parse_option_text_edge_cases() -> None:
    assert parse_option("red", {"A": "red", "B": "red"}) is None  # two choices with that text
    assert parse_option("A.I.", {"A": "robot", "B": "A.I."}) == "B"  # a choice text that starts like a letter
    assert parse_option("3", {"A": "0", "B": "3"}) == "B"
    assert parse_option("B", None) is None


@pytest.mark.parametrize(
    ("text", "word", "expected"),
    [
        ("not sure", "no", False), ("No.", "no", True), ("no, it is not", "No", True),
        ("13", "3", False), ("3.5", "3", False), ("1,3", "3", False), ("3 apples", "3", True),
        ("there are 3.", "3", True), ("3, maybe", "3", True), ("Yes, there is", "yes", True),
        ("yesterday", "yes", False), ("on the left  side", "left side", True), ("leftside", "left", False),
        ("", "no", False), ("no", "", False), (None, "no", False),
    ],
)
def test_contains_word(text: str | None, word: str, expected: bool) -> None:
    assert contains_word(text, word) is expected


def test_split_lettered() -> None:
    stem, opts = split_lettered("What colour?\n(A) red\n(B) dark blue\nAnswer with the option's letter directly.")
    assert (stem, opts) == ("What colour?", {"A": "red", "B": "dark blue"})
    assert split_lettered("Where? (A) left (B) right") == ("Where?", {"A": "left", "B": "right"})
    with pytest.raises(ValueError, match="no lettered options"):
        split_lettered("Where is it? (B) left")


def test_mc_prompt_format() -> None:
    assert mc_prompt(" Which? ", {"B": "y", "A": "x"}) == (
        "Which?\n(A) x\n(B) y\nAnswer with the option's letter from the given choices.")


def test_summarize_counts_skips_and_composites() -> None:
    results = [ItemResult("a", "c1", True, False), ItemResult("b", "c1", False, True),
               ItemResult("c", "c2", None, False)]
    units = [Unit(True, ("overall", "category/c1")), Unit(False, ("overall", "category/c1")),
             Unit(None, ("overall", "category/c2"))]
    s = summarize("x", Scoring.STRICT, results, units, composite={"mean": 0.25}, notes=["hi"])
    assert s.metrics == {"overall": 0.5, "n": 3.0, "format_failures": 1.0, "skipped": 1.0,
                         "category/c1": 0.5, "mean": 0.25}  # c2 has no scored unit: no key
    assert s.intervals == {"overall": wilson(1, 2), "category/c1": wilson(1, 2)}  # none for the composite
    assert (s.benchmark, s.scoring, s.notes) == ("x", Scoring.STRICT, ["hi"])
    empty = summarize("x", "original", [], [])
    assert empty.metrics["overall"] == 0.0 and empty.notes == ["no item was scored: overall set to 0"]


# ---- SpatialBench -----------------------------------------------------------------------------------
SB_RESPONSES = {
    "positional-positional_0": sif("yes"),  # GT "Yes"
    "positional-positional_1": NO_ANSWER,  # GT "left"
    "positional-positional_2": sif("not sure"),  # GT "no"
    "existence-0": sif("Yes"), "existence-1": sif("No"),  # pair right
    "existence-2": sif("No") + "\n<answer>Yes</answer>",  # two answers (GT "Yes")
    "existence-3": sif("Yes, there is"),  # GT "No"
    "counting-counting_0": sif("13"),  # GT "3"
    "counting-counting_1": sif("2"),
    "reach-reach_0": sif("Yes"), "reach-reach_1": NO_ANSWER,  # GT "No"
    "size-size_0": sif("Yes"), "size-size_1": sif("no"),  # GT "No"
    "size-size_2": sif("No"), "size-size_3": sif("No"),  # GT "Yes", "No"
}


def test_spatialbench_load() -> None:
    root = FIXTURES / "spatialbench"
    items = get_benchmark("spatialbench").load(root)
    assert [i.id for i in items] == list(SB_RESPONSES)
    assert [i.category for i in items] == ["positional"] * 3 + ["existence"] * 4 + ["counting"] * 2 + \
        ["reach"] * 2 + ["size"] * 4
    assert [i.pair_id for i in items if i.category == "existence"] == ["existence-0", "existence-0",
                                                                       "existence-1", "existence-1"]
    assert {i.pair_id for i in items if i.category in ("positional", "counting")} == {None}
    assert [i.answer for i in items if i.category == "counting"] == ["3", "2"]  # a JSON number becomes text
    assert items[9].images == ["reach/r0.png"]  # published as a list
    assert all((root / p).is_file() for i in items for p in i.images)
    assert get_benchmark("spatialbench").prompt(items[0]) == (
        "Is the red block to the left of the blue block? Answer yes or no.")


def test_spatialbench_limit_never_splits_a_pair(tmp_path: Path) -> None:
    bench = get_benchmark("spatialbench")
    root = FIXTURES / "spatialbench"
    assert [i.id for i in bench.load(root, limit=4)] == list(SB_RESPONSES)[:3]
    assert [i.id for i in bench.load(root, limit=5)] == list(SB_RESPONSES)[:5]
    data = copy_fixture(tmp_path, "spatialbench")
    records = json.loads((data / "size.json").read_text())
    (data / "size.json").write_text(json.dumps(records[:3]))
    with pytest.raises(ValueError, match="even number"):
        bench.load(data)


def test_spatialbench_strict_scores() -> None:
    bench = get_benchmark("spatialbench")
    items = bench.load(FIXTURES / "spatialbench")
    s = bench.score(items, SB_RESPONSES, Scoring.STRICT)
    # positional: only "yes" ("no" is not in "not", the missing answer is wrong) = 1/3; existence: pair 1 right
    # (pair 2 has two answers and a wrong one) = 1/2; counting: "13" is not 3 = 1/2; reach: the missing
    # answer sinks the pair = 0/1; size: "no" matches "No" ignoring case, pair 2 wrong = 1/2.
    cats = {"positional": 1 / 3, "existence": 0.5, "counting": 0.5, "reach": 0.0, "size": 0.5}
    assert s.metrics == pytest.approx({"overall": sum(cats.values()) / 5, "n": 15, "format_failures": 3,
                                       "skipped": 0, **{f"category/{k}": v for k, v in cats.items()}})
    assert s.metrics["overall"] == pytest.approx(11 / 30)
    assert list(s.metrics)[:4] == ["overall", "n", "format_failures", "skipped"]
    assert s.intervals["category/positional"] == wilson(1, 3)
    assert s.intervals["category/existence"] == wilson(1, 2)  # over pairs, not items
    assert "overall" not in s.intervals  # a mean of category accuracies is not one proportion
    by_id = {r.id: r for r in s.items}
    assert by_id["positional-positional_1"].format_failure and by_id["existence-2"].format_failure
    assert by_id["counting-counting_0"].parsed == "13" and not by_id["counting-counting_0"].correct
    assert s.scoring is Scoring.STRICT


def test_spatialbench_original_scores() -> None:
    bench = get_benchmark("spatialbench")
    items = bench.load(FIXTURES / "spatialbench")
    s = bench.score(items, SB_RESPONSES, Scoring.ORIGINAL)
    # Differences from strict: a missing <answer> counts right (E1: positional_1, reach_1); matching is a
    # case-sensitive plain substring ("Yes" is not in "yes", "No" not in "no", "no" is in "not sure",
    # "3" is in "13"); two answer blocks are read as the first ("No").
    cats = {"positional": 2 / 3, "existence": 0.5, "counting": 1.0, "reach": 1.0, "size": 0.0}
    # The original script's own numbers: reach/size (items + pairs) / (3 x pairs) = 3/3 and 2/6;
    # counting 1 - mean(|13-3|/3, 0) = -2/3; existence pairs; positional items.
    official = {"positional": 2 / 3, "existence": 0.5, "counting": -2 / 3, "reach": 1.0, "size": 1 / 3}
    assert s.metrics == pytest.approx({
        "overall": 19 / 30, "n": 15, "format_failures": 3, "skipped": 0,
        **{f"category/{k}": v for k, v in cats.items()},
        **{f"official/{k}": v for k, v in official.items()}, "official/overall": 11 / 30})
    by_id = {r.id: r for r in s.items}
    assert by_id["reach-reach_1"].correct and by_id["reach-reach_1"].note.startswith("no <answer>")
    assert by_id["existence-2"].parsed == "No"
    assert any("counted right (E1)" in n for n in s.notes)
    assert s.scoring is Scoring.ORIGINAL


def test_spatialbench_counting_where_the_original_would_stop() -> None:
    bench = get_benchmark("spatialbench")
    items = [i for i in bench.load(FIXTURES / "spatialbench") if i.category == "counting"]
    s = bench.score(items, {items[0].id: sif("3 apples"), items[1].id: sif("2")}, Scoring.ORIGINAL)
    assert s.metrics["official/counting"] == pytest.approx(0.5)  # int("3 apples") fails: a 100% error
    assert any("would stop" in n for n in s.notes)


def test_spatialbench_pair_with_an_unscored_partner_is_left_out() -> None:
    bench = get_benchmark("spatialbench")
    items = bench.load(FIXTURES / "spatialbench")
    # The runner scores only answered items: existence-1 was skipped upstream, so pair existence-0 cannot
    # be scored; existence-0 is then in no denominator either.
    s = bench.score(items[:4] + items[5:7], SB_RESPONSES, Scoring.STRICT)
    assert s.metrics == pytest.approx({"overall": (1 / 3 + 0.0) / 2, "n": 6, "format_failures": 2,
                                       "skipped": 1, "category/positional": 1 / 3, "category/existence": 0.0})
    orphan = next(r for r in s.items if r.id == "existence-0")
    assert orphan.correct is None and orphan.note == "pair partner not scored: pair left out"
    assert any("1 item(s) whose pair partner" in n for n in s.notes)


def test_spatialbench_rejects_a_missing_response() -> None:
    bench = get_benchmark("spatialbench")
    items = bench.load(FIXTURES / "spatialbench")
    with pytest.raises(ValueError, match="no response for 1 item"):
        bench.score(items, {k: v for k, v in SB_RESPONSES.items() if k != "size-size_3"}, Scoring.STRICT)


# ---- CV-Bench ---------------------------------------------------------------------------------------
CV_RESPONSES = {
    "2D-0": sif("3"),  # the text of B (right)
    "2D-1": sif("(A) left"),  # right
    "2D-2": sif("Definitely D, not C"),  # GT D: strict names two letters; Cambrian reads the first character
    "2D-3": NO_ANSWER + "\nAnswer: B",  # GT B, outside <answer>
    "3D-4": sif("A lamp"),  # GT A: strict cannot tell the article from the option
    "3D-5": sif("sofa"),  # GT B (sofa)
}


def test_cvbench_load_writes_the_images_from_parquet(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "cv-bench")
    assert not (root / "img").exists()  # as published: no img/ folder
    items = get_benchmark("cv-bench").load(root)
    assert [i.id for i in items] == list(CV_RESPONSES)
    assert [(i.category, i.source) for i in items] == [
        ("Count", "ADE20K"), ("Relation", "ADE20K"), ("Count", "COCO"), ("Relation", "COCO"),
        ("Depth", "Omni3D"), ("Distance", "Omni3D")]
    assert items[0].options == {"A": "0", "B": "3", "C": "2", "D": "1"} and items[0].answer == "B"
    assert [i.answer for i in items] == ["B", "A", "D", "B", "A", "B"]
    assert items[2].images == ["img/2D/count/coco_287.png"]
    with Image.open(root / items[2].images[0]) as im:  # JPEG bytes under a .png name: re-encoded
        assert (im.format, im.size) == ("PNG", (16, 12))
    with Image.open(root / items[0].images[0]) as im:
        assert im.format == "PNG"
    assert get_benchmark("cv-bench").prompt(items[1]) == (
        "Considering the relative positions of the bed and the lamp in the image provided, where is the bed "
        "located with respect to the lamp?\n(A) left\n(B) right\n"
        "Answer with the option's letter from the given choices.")


def test_cvbench_other_layouts(tmp_path: Path) -> None:
    bench = get_benchmark("cv-bench")
    root = copy_fixture(tmp_path, "cv-bench")
    expected = [i.to_json() for i in bench.load(root)]
    for name in ("test_2d.parquet", "test_3d.parquet"):  # JSONL + img/, as before the parquet era
        (root / name).rename(tmp_path / name)
    assert [i.to_json() for i in bench.load(root)] == expected
    legacy = "".join((root / n).read_text() for n in ("test_2d.jsonl", "test_3d.jsonl"))
    for name in ("test_2d.jsonl", "test_3d.jsonl"):
        (root / name).unlink()
    (root / "test.jsonl").write_text(legacy)  # the single file before the 2D/3D split
    assert [i.to_json() for i in bench.load(root, limit=2)] == expected[:2]
    (root / "test.jsonl").unlink()
    for name in ("test_2d.parquet", "test_3d.parquet"):  # parquet only: annotations and images from it
        (tmp_path / name).rename(root / name)
    shutil.rmtree(root / "img")
    assert [i.to_json() for i in bench.load(root)] == expected
    for name in ("test_2d.parquet", "test_3d.parquet"):
        (root / name).unlink()
    with pytest.raises(FileNotFoundError, match="test_2d.jsonl"):
        bench.load(root)


def test_cvbench_missing_image_without_parquet(tmp_path: Path) -> None:
    root = tmp_path / "cv"
    root.mkdir()
    shutil.copy(FIXTURES / "cv-bench" / "test_3d.jsonl", root / "test.jsonl")
    with pytest.raises(FileNotFoundError, match="2 image"):
        get_benchmark("cv-bench").load(root)


def test_cvbench_strict_scores(tmp_path: Path) -> None:
    bench = get_benchmark("cv-bench")
    s = bench.score(bench.load(copy_fixture(tmp_path, "cv-bench")), CV_RESPONSES, Scoring.STRICT)
    # Right: 2D-0 (text "3"), 2D-1 ("(A) left"), 3D-5 ("sofa"). ADE20K 2/2, COCO 0/2, Omni3D 1/2:
    # accuracy_2d = (1 + 0) / 2, accuracy_3d = 0.5, overall = (0.5 + 0.5) / 2.
    assert s.metrics == pytest.approx({
        "overall": 0.5, "n": 6, "format_failures": 1, "skipped": 0, "accuracy_2d": 0.5, "accuracy_3d": 0.5,
        "category/Count": 0.5, "category/Depth": 0.0, "category/Distance": 1.0, "category/Relation": 0.5,
        "source/ADE20K": 1.0, "source/COCO": 0.0, "source/Omni3D": 0.5})
    assert s.intervals["accuracy_3d"] == s.intervals["source/Omni3D"] == wilson(1, 2)
    assert "overall" not in s.intervals and "accuracy_2d" not in s.intervals
    by_id = {r.id: r for r in s.items}
    assert by_id["2D-3"].format_failure and not by_id["2D-2"].format_failure
    assert by_id["2D-2"].note == "the answer names no single option" and by_id["2D-0"].parsed == "B"


def test_cvbench_original_scores(tmp_path: Path) -> None:
    bench = get_benchmark("cv-bench")
    s = bench.score(bench.load(copy_fixture(tmp_path, "cv-bench")), CV_RESPONSES, Scoring.ORIGINAL)
    # Cambrian's first character: 2D-0 "3" (= B's text), 2D-1 "a", 2D-2 "d", 2D-3 "b" (after "answer:",
    # no <answer> needed), 3D-4 "a" right; 3D-5 "s" wrong. ADE20K 1, COCO 1, Omni3D 1/2: overall 0.75.
    assert s.metrics == pytest.approx({
        "overall": 0.75, "n": 6, "format_failures": 1, "skipped": 0, "accuracy_2d": 1.0, "accuracy_3d": 0.5,
        "category/Count": 1.0, "category/Depth": 1.0, "category/Distance": 0.0, "category/Relation": 1.0,
        "source/ADE20K": 1.0, "source/COCO": 1.0, "source/Omni3D": 0.5})


def test_cvbench_partial_sources_are_noted(tmp_path: Path) -> None:
    bench = get_benchmark("cv-bench")
    items = bench.load(copy_fixture(tmp_path, "cv-bench"), limit=2)  # ADE20K only
    s = bench.score(items, CV_RESPONSES, Scoring.STRICT)
    assert (s.metrics["overall"], s.metrics["accuracy_2d"]) == (1.0, 1.0) and "accuracy_3d" not in s.metrics
    assert any("sources present" in n for n in s.notes)


@pytest.mark.parametrize(
    ("text", "read"),
    [("B", "b"), ("(B)", "b"), ("The answer is (C).", "c"), ("answer: d", "d"), ("Because of A", "b"),
     ("3", "3"), ("", "")],
)
def test_cambrian_letter(text: str, read: str) -> None:
    assert cambrian_letter(text) == read


# ---- V* ---------------------------------------------------------------------------------------------
VSTAR_RESPONSES = {
    "0": sif("A"),  # GT A
    "1": sif("(B) red, not C"),  # GT C: strict reads no single option; the label is a substring (E2)
    "2": sif("b"),  # GT B: a lower-case letter is fine strictly; "B" is not a substring of "b"
    "115": NO_ANSWER,  # GT A
    "116": sif("right"),  # GT B (right): the choice's text
}


def test_vstar_load_and_prompt() -> None:
    bench = get_benchmark("vstar")
    items = bench.load(FIXTURES / "vstar")
    assert [i.id for i in items] == list(VSTAR_RESPONSES)
    assert [i.category for i in items] == ["direct_attributes"] * 3 + ["relative_position"] * 2
    assert items[0].question == "What is the material of the glove?"
    assert items[0].options == {"A": "rubber", "B": "cotton", "C": "kevlar", "D": "leather"}
    assert items[3].options == {"A": "left", "B": "right"} and items[3].answer == "A"
    assert items[0].extra["text"].endswith("directly.")
    assert all((FIXTURES / "vstar" / i.images[0]).is_file() for i in items)
    assert bench.prompt(items[3]) == ("Is the umbrella on the left or right side of the bench?\n(A) left\n"
                                      "(B) right\nAnswer with the option's letter from the given choices.")
    assert [i.id for i in bench.load(FIXTURES / "vstar", limit=2)] == ["0", "1"]


def test_vstar_scores_strict_and_original() -> None:
    bench = get_benchmark("vstar")
    items = bench.load(FIXTURES / "vstar")
    strict = bench.score(items, VSTAR_RESPONSES, Scoring.STRICT)
    # Right: 0, 2, 116 = 3/5 over items (the mean of the category means, (2/3 + 1/2) / 2, would be 0.583).
    assert strict.metrics == pytest.approx({"overall": 0.6, "n": 5, "format_failures": 1, "skipped": 0,
                                            "category/direct_attributes": 2 / 3,
                                            "category/relative_position": 0.5})
    assert strict.intervals["overall"] == wilson(3, 5)
    original = bench.score(items, VSTAR_RESPONSES, Scoring.ORIGINAL)
    # E2: right when the label is a substring of the answer: 0 ("A"), 1 ("... not C"); "b" and "right"
    # do not contain "B"; no answer is wrong. 2/5.
    assert original.metrics == pytest.approx({"overall": 0.4, "n": 5, "format_failures": 1, "skipped": 0,
                                              "category/direct_attributes": 2 / 3,
                                              "category/relative_position": 0.0})
    assert [r.correct for r in original.items] == [True, True, False, False, False]


def test_vstar_bad_label(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "vstar")
    row = json.loads((root / "test_questions.jsonl").read_text().splitlines()[0]) | {"label": "E"}
    (root / "test_questions.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="test_questions.jsonl:1: label 'E'"):
        get_benchmark("vstar").load(root)


# ---- SAT --------------------------------------------------------------------------------------------
SAT_RESPONSES = {
    "test-0": sif("right"),  # GT right
    "test-1": NO_ANSWER,  # GT no
    "test-2": sif("on their right, not on their left"),  # GT "on their left"
    "test-3": sif("rotated left"),  # GT rotated left; the item has two images
}


def test_sat_load_writes_images_and_shuffles_options(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "sat")
    items = get_benchmark("sat").load(root)
    assert [i.id for i in items] == list(SAT_RESPONSES)
    assert [i.category for i in items] == ["goal_aim", "action_consequence", "perspective", "ego_movement"]
    assert items[3].images == ["SAT_test_images/000003_0.png", "SAT_test_images/000003_1.png"]
    assert items[1].images == ["SAT_test_images/000001_0.jpg"]
    for item in items:
        for p in item.images:
            with Image.open(root / p) as im:
                assert im.size == (16, 12)
    # Fixed per-item shuffle: items 2 and 3 are presented in the reverse of their stored order.
    assert [i.options for i in items] == [{"A": "right", "B": "left"}, {"A": "yes", "B": "no"},
                                          {"A": "on their right", "B": "on their left"},
                                          {"A": "rotated right", "B": "rotated left"}]
    assert [i.answer for i in items] == ["A", "B", "B", "B"]
    assert items[2].extra["answers"] == ["on their left", "on their right"]
    assert [i.to_json() for i in get_benchmark("sat").load(root)] == [i.to_json() for i in items]  # rerun
    assert get_benchmark("sat").prompt(items[0]) == (
        "Which direction should I turn to face the red chair?\n(A) right\n(B) left\n"
        "Answer with the option's letter from the given choices.")
    assert len(get_benchmark("sat").load(root, limit=2)) == 2


def test_sat_reads_hugging_face_image_structs(tmp_path: Path) -> None:
    table = pq.read_table(FIXTURES / "sat" / "SAT_test.parquet")
    cells = [[{"bytes": b, "path": None} for b in row] for row in table.column("image_bytes").to_pylist()]
    struct = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    root = tmp_path / "hf"
    root.mkdir()
    pq.write_table(table.set_column(0, "image_bytes", pa.array(cells, type=struct)), root / "SAT_test.parquet")
    items = get_benchmark("sat").load(root)
    assert [i.to_json() for i in items] == [i.to_json() for i in get_benchmark("sat").load(
        copy_fixture(tmp_path, "sat"))]


def test_sat_strict_scores(tmp_path: Path) -> None:
    items = get_benchmark("sat").load(copy_fixture(tmp_path, "sat"))
    s = get_benchmark("sat").score(items, SAT_RESPONSES, Scoring.STRICT)
    # Right: 0 (text), 3 (both images given). 1 has no answer; 2 names two choices. 2/4.
    assert s.metrics == pytest.approx({"overall": 0.5, "n": 4, "format_failures": 1, "skipped": 0,
                                       "category/action_consequence": 0.0, "category/ego_movement": 1.0,
                                       "category/goal_aim": 1.0, "category/perspective": 0.0})
    letters = get_benchmark("sat").score(items, {i.id: sif(f"({i.answer})") for i in items}, Scoring.STRICT)
    assert letters.metrics["overall"] == 1.0  # the chosen option may be named by its letter
    all_b = get_benchmark("sat").score(items, dict.fromkeys(SAT_RESPONSES, sif("B")), Scoring.STRICT)
    assert all_b.metrics["overall"] == 0.75


def test_sat_single_image_setting_skips_and_says_so(tmp_path: Path) -> None:
    bench = SATBenchmark(max_images=1)
    items = bench.load(copy_fixture(tmp_path, "sat"))
    responses = {k: v for k, v in SAT_RESPONSES.items() if k != "test-3"}  # never generated
    s = bench.score(items, responses, Scoring.STRICT)
    # E5 fixed: the two-image item is out of every denominator: 1/3, and no ego_movement accuracy.
    assert s.metrics == pytest.approx({"overall": 1 / 3, "n": 4, "format_failures": 1, "skipped": 1,
                                       "category/action_consequence": 0.0, "category/goal_aim": 1.0,
                                       "category/perspective": 0.0})
    assert s.intervals["overall"] == wilson(1, 3)
    skipped = s.items[3]
    assert skipped.correct is None and "skipped" in skipped.note
    assert any("1 multi-image item(s) skipped" in n and "excluded" in n for n in s.notes)
    with pytest.raises(ValueError, match="test-2"):
        bench.score(items, {k: v for k, v in responses.items() if k != "test-2"}, Scoring.STRICT)
    with pytest.raises(ValueError, match="max_images"):
        SATBenchmark(max_images=0)


def test_sat_original_scores(tmp_path: Path) -> None:
    items = get_benchmark("sat").load(copy_fixture(tmp_path, "sat"))
    s = get_benchmark("sat").score(items, SAT_RESPONSES, Scoring.ORIGINAL)
    # 0 right; 1 has no answer, the ground truth stands in: right (E4); 2: the first stored choice found in
    # the answer is "on their left" (the one it rejects): right; 3 skipped for its two images but still in
    # the denominator (E5). 3/4.
    assert s.metrics == pytest.approx({"overall": 0.75, "n": 4, "format_failures": 1, "skipped": 1,
                                       "category/action_consequence": 1.0, "category/ego_movement": 0.0,
                                       "category/goal_aim": 1.0, "category/perspective": 1.0})
    assert s.items[3].correct is False and "E5" in s.items[3].note
    assert any("(E4)" in n for n in s.notes) and any("(E5)" in n for n in s.notes)
    assert any("static" in n and "(E3)" in n for n in s.notes)


def test_sat_static_split_is_a_data_choice(tmp_path: Path) -> None:
    root = tmp_path / "sat"
    root.mkdir()
    shutil.copy(FIXTURES / "sat" / "SAT_test.parquet", root / "SAT_static.parquet")
    bench = SATBenchmark(split="static")
    items = bench.load(root)
    assert items[0].id == "static-0" and items[0].images == ["SAT_static_images/000000_0.png"]
    s = bench.score(items, {i.id: SAT_RESPONSES[i.id.replace("static", "test")] for i in items}, "original")
    assert not any("(E3)" in n for n in s.notes)
    with pytest.raises(FileNotFoundError, match="SAT_test.parquet"):
        get_benchmark("sat").load(root)


def test_every_adapter_is_registered_with_its_name() -> None:
    for name in ("spatialbench", "cv-bench", "vstar", "sat"):
        bench = get_benchmark(name)
        assert bench.name == name
    item = Item("x", "sat", "c", "q", ["a.png"], options={"A": "x", "B": "y"}, answer="A")
    assert get_benchmark("sat").prompt(item) == "q\n(A) x\n(B) y\nAnswer with the option's letter from the given choices."
