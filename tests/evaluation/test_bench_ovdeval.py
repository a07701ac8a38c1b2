"""OVDEval adapter: loading the published layout, the prompt, NMS-AP scoring by hand, strict vs original.

Fixture: tests/fixtures/benchmarks/ovdeval (README there). Boxes below are per-axis normalised; the
pixel boxes and AP values beside them are computed by hand.
"""

import json
import shutil
from pathlib import Path

import pytest

from sifthinker.evaluation.benchmarks import Scoring, get_benchmark
from sifthinker.evaluation.benchmarks.base import read_items, write_items
from sifthinker.evaluation.benchmarks.ovdeval import BENCHMARK, read_boxes

FIX = Path(__file__).parents[1] / "fixtures" / "benchmarks" / "ovdeval"


def box(x1, y1, x2, y2, depth=0.5) -> str:
    return f'{{"bbox_2d":[{x1},{y1},{x2},{y2}],"depth":{depth}}}'


def sif(*areas: str, answer: str = "found") -> str:
    """A SIF trace whose areas hold the given JSON texts, in order."""
    steps = "".join(f"<area>{a}</area>\n<text>step {i}</text>\n" for i, a in enumerate(areas))
    return f"<think>\n{steps}</think>\n<answer>{answer}</answer>"


def boxes(*bs: tuple) -> str:
    return "[" + ",".join(box(*b) for b in bs) + "]"


IDS = ["color/0/0", "color/0/1", "color/1/2", "color/1/3",
       "negation/0/0", "negation/0/1", "negation/1/1", "negation/1/0"]

RESPONSES = {
    # color, c0 (64 x 48), GT red car [0, 0, 32, 24]: found exactly (pixels [0, 0, 32, 24], score 1).
    "color/0/0": sif(boxes((0, 0, 1, 1)), boxes((0, 0, 0.5, 0.5))),
    # its hard negative: a stray box (no GT for blue car anywhere: not counted), then the red car's box
    # again as the second box (score 0.999 < 1): the suppression drops it.
    "color/0/1": sif(boxes((0.5, 0.5, 1, 1), (0, 0, 0.5, 0.5))),
    # c1, GT green apple [32, 24, 16, 12] and [0, 24, 16, 24]: one found, one missed -> recall 1/2,
    # precision 1: AP = 51/101 at every threshold (recall points 0, .01, ..., .50).
    "color/1/2": sif(boxes((0.5, 0.5, 0.75, 0.75))),
    # red apple (negative) on the missed apple: kept (nothing competes), red apple has no GT: no cost.
    "color/1/3": sif(boxes((0, 0.5, 0.25, 1))),
    # negation, n0 (64 x 48), GT "without" [16, 12, 32, 24]: found exactly...
    "negation/0/0": sif(boxes((0.25, 0.25, 0.75, 0.75))),
    # ...and the same box for the hard negative "with", also first (score 1): a tie, which the official
    # rule gives to the later-listed prediction, this one. "without" loses its hit; the box is a false
    # positive for "with", whose GT is on n1.
    "negation/0/1": sif(boxes((0.25, 0.25, 0.75, 0.75))),
    # n1 (48 x 64), GT "with" [0, 0, 24, 32]: right in the first area (pixels [0, 0, 24, 32]), then a
    # broken last area. strict: no detection (a format failure); original: the first area, a hit.
    "negation/1/1": sif(boxes((0, 0, 0.5, 0.5)), '[{"bbox_2d":[0,0,0.5'),
    # "without" on n1: [24, 48, 24, 16], far from everything: a false positive for "without".
    "negation/1/0": sif(boxes((0.5, 0.75, 1, 1))),
}
COLOR_AP = (1.0 + 51 / 101) / 2
# strict, negation: "without" has only the n1 false positive, "with" only the n0 one: 0.
# original, negation: "with" ranks the n0 false positive (image 0) before the n1 hit (equal scores,
# image order): precision 1/2 at recall 1 -> 0.5; "without" 0 -> 0.25.
NEGATION_AP = {Scoring.STRICT: 0.0, Scoring.ORIGINAL: 0.25}


@pytest.fixture(scope="module")
def items():
    return BENCHMARK.load(FIX)


def test_registry_returns_this_adapter():
    assert get_benchmark("ovdeval") is BENCHMARK and BENCHMARK.name == "ovdeval"


def test_load_gives_one_item_per_image_and_label(items):
    assert [i.id for i in items] == IDS
    by_id = {i.id: i for i in items}
    red = by_id["color/0/0"]
    assert (red.question, red.category, red.source, red.images) == ("red car", "color", "color", ["images/color/c0.png"])
    assert (red.boxes, red.width, red.height, red.answer) == ([[0.0, 0.0, 32.0, 24.0]], 64, 48, None)
    assert red.extra == {"subset": "color", "image_id": 0, "category_id": 0, "label": "red car", "negative": False,
                         "annotations": [{"bbox": [0.0, 0.0, 32.0, 24.0], "area": 768.0, "iscrowd": 0}]}
    assert by_id["color/1/2"].boxes == [[32.0, 24.0, 48.0, 36.0], [0.0, 24.0, 16.0, 48.0]]
    assert by_id["color/0/1"].boxes == [] and by_id["color/0/1"].extra["negative"] is True
    tall = by_id["negation/1/1"]
    assert (tall.width, tall.height, tall.boxes, tall.images) == (48, 64, [[0.0, 0.0, 24.0, 32.0]], ["images/negation/n1.png"])
    assert [i.extra["negative"] for i in items] == [False, True] * 4


def test_prompt_asks_for_the_label():
    item = BENCHMARK.load(FIX, limit=1)[0]
    assert BENCHMARK.prompt(item) == ("Locate every red car in the image. Output the bounding boxes of all of "
                                      "them in the last <area>.")


@pytest.mark.parametrize("limit, ids", [
    (3, ["color/0/0", "color/0/1", "negation/0/0"]),  # whole images in turn from each subset, then cut
    (5, IDS[:5]),
    (100, IDS),
])
def test_limit_takes_images_from_every_subset(limit, ids):
    assert [i.id for i in BENCHMARK.load(FIX, limit=limit)] == ids


def test_the_dataset_repository_layout_loads_too(tmp_path):
    for sub in ("color", "negation"):
        shutil.copy(FIX / "annotations" / f"{sub}.json", tmp_path / f"{sub}.json")
        shutil.copytree(FIX / "images" / sub, tmp_path / sub)
    items = BENCHMARK.load(tmp_path)
    assert [i.id for i in items] == IDS and items[0].images == ["color/c0.png"]


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no OVDEval annotation files"):
        BENCHMARK.load(tmp_path)
    (tmp_path / "annotations").mkdir()
    shutil.copy(FIX / "annotations" / "color.json", tmp_path / "annotations" / "color.json")
    with pytest.raises(FileNotFoundError, match="c0.png"):
        BENCHMARK.load(tmp_path)


def test_an_unknown_label_is_an_error(tmp_path):
    shutil.copytree(FIX, tmp_path / "ov")
    path = tmp_path / "ov" / "annotations" / "color.json"
    data = json.loads(path.read_text())
    data["images"][0]["neg_text"] = ["purple car"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'purple car' is not a category name"):
        BENCHMARK.load(tmp_path / "ov")


@pytest.mark.parametrize("scoring", [Scoring.STRICT, Scoring.ORIGINAL])
def test_scores_by_hand(items, scoring):
    s = BENCHMARK.score(items, RESPONSES, scoring)
    m = s.metrics
    assert s.benchmark == "ovdeval" and s.scoring is scoring
    assert m["color/AP"] == pytest.approx(COLOR_AP, abs=1e-12)
    assert m["color/AP50"] == pytest.approx(COLOR_AP, abs=1e-12)  # every IoU is 1 or 0
    assert m["negation/AP"] == pytest.approx(NEGATION_AP[scoring], abs=1e-12)
    assert m["negation/AP50"] == pytest.approx(NEGATION_AP[scoring], abs=1e-12)
    assert m["category/color"] == m["color/AP"] and m["category/negation"] == m["negation/AP"]
    mean = (COLOR_AP + NEGATION_AP[scoring]) / 2
    assert m["AP"] == pytest.approx(mean, abs=1e-12) and m["overall"] == m["AP"]
    assert m["AP50"] == pytest.approx(mean, abs=1e-12)
    assert m["n"] == 8.0 and m["skipped"] == 0.0


def test_strict_and_original_differ_exactly_on_the_broken_last_area(items):
    strict = BENCHMARK.score(items, RESPONSES, Scoring.STRICT)
    original = BENCHMARK.score(items, RESPONSES, Scoring.ORIGINAL)
    assert (strict.metrics["format_failures"], original.metrics["format_failures"]) == (1.0, 0.0)
    differ = [a.id for a, b in zip(strict.items, original.items, strict=True) if a != b]
    assert differ == ["negation/1/1"]
    broken = strict.items[IDS.index("negation/1/1")]
    assert (broken.format_failure, broken.correct, broken.note) == (True, False, "the last <area> does not parse")
    fixed = original.items[IDS.index("negation/1/1")]
    assert (fixed.format_failure, fixed.correct, fixed.parsed) == (False, True, "[[0.0, 0.0, 24.0, 32.0]]")
    # exactly right: red car, "without" on n0 (its box is right even if suppression later drops it),
    # and in original the n1 "with".
    assert [r.id for r in strict.items if r.correct] == ["color/0/0", "negation/0/0"]
    assert strict.metrics["item_accuracy"] == 2 / 8 and original.metrics["item_accuracy"] == 3 / 8


def test_perfect_answers_score_one(items):
    # Every positive found exactly, every negative answered with an empty last area. Had the adapter kept
    # the files' annotation ids (from 0), pycocotools would count the hit on id 0 as a miss.
    perfect = {}
    for it in items:
        w, h = it.width, it.height
        found = [(x1 / w, y1 / h, x2 / w, y2 / h) for x1, y1, x2, y2 in it.boxes]
        perfect[it.id] = sif(boxes(*found)) if found else sif(boxes((0, 0, 1, 1)), "[]")
    s = BENCHMARK.score(items, perfect, Scoring.STRICT)
    for key in ("color/AP", "negation/AP", "AP", "AP50"):
        assert s.metrics[key] == pytest.approx(1.0, abs=1e-12), key
    assert s.metrics["format_failures"] == 0.0 and s.metrics["item_accuracy"] == 1.0


def test_an_inverted_box_is_a_false_positive_not_ignored(items):
    color = [i for i in items if i.source == "color"]
    resp = {i.id: sif("[]") for i in color}
    resp["color/1/2"] = sif(boxes((0.5, 0.5, 0.75, 0.75)))  # green apple 1 of 2: 51/101; red car: 0
    assert BENCHMARK.score(color, resp, Scoring.STRICT).metrics["color/AP"] == pytest.approx(51 / 101 / 2, abs=1e-12)
    # An inverted box first (score 1): a zero-size false positive ranked ahead of the hit (0.999), so
    # precision 1/2 up to recall 1/2. Dropped or kept inverted (negative area: ignored), it would cost nothing.
    resp["color/1/2"] = sif(boxes((0.75, 0.75, 0.5, 0.5), (0.5, 0.5, 0.75, 0.75)))
    assert BENCHMARK.score(color, resp, Scoring.STRICT).metrics["color/AP"] == pytest.approx(51 / 101 / 4, abs=1e-12)


def test_items_survive_a_jsonl_round_trip(items, tmp_path):
    again = read_items(write_items(tmp_path / "items.jsonl", items))
    assert again == items
    assert BENCHMARK.score(again, RESPONSES, Scoring.STRICT).metrics == BENCHMARK.score(items, RESPONSES, Scoring.STRICT).metrics


def test_a_missing_response_is_an_error(items):
    with pytest.raises(ValueError, match="no response for 1 item"):
        BENCHMARK.score(items, {k: v for k, v in RESPONSES.items() if k != "color/0/0"}, Scoring.STRICT)


@pytest.mark.parametrize("text, strict, original", [
    (sif(boxes((0, 0, 1, 1)), "[]"), ([], ""), ([(0, 0, 1, 1)], "")),  # [] = none; original skips it
    (sif(boxes((0.1, 0.2, 0.3, 0.4))) + "<area>[", (None, "the last <area> is not closed"), ([(0.1, 0.2, 0.3, 0.4)], "")),
    ("<answer>a dog</answer>", (None, "no <area>"), (None, "no parseable <area>")),
])
def test_read_boxes(text, strict, original):
    assert read_boxes(text, Scoring.STRICT) == strict
    assert read_boxes(text, Scoring.ORIGINAL) == original
