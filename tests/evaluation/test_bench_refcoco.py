"""RefCOCO adapter: loading Visual-CoT's REC files, the prompt, strict vs original (E6) scoring.

Fixture: tests/fixtures/benchmarks/refcoco (README there). IoUs below are computed by hand in pixels.
"""

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from sifthinker.evaluation.benchmarks import Scoring, get_benchmark
from sifthinker.evaluation.benchmarks.base import read_items, wilson, write_items
from sifthinker.evaluation.benchmarks.refcoco import BENCHMARK, SPLITS, predicted_box

FIX = Path(__file__).parents[1] / "fixtures" / "benchmarks" / "refcoco"


def box(x1, y1, x2, y2, depth=0.5) -> str:
    return f'{{"bbox_2d":[{x1},{y1},{x2},{y2}],"depth":{depth}}}'


def sif(*areas: str, answer: str = "here") -> str:
    """A SIF trace whose areas hold the given JSON texts, in order."""
    steps = "".join(f"<area>{a}</area>\n<text>step {i}</text>\n" for i, a in enumerate(areas))
    return f"<think>\n{steps}</think>\n<answer>{answer}</answer>"


FULL = f"[{box(0, 0, 1, 1)}]"

# id -> (response, strict IoU, original IoU); sizes and GT boxes are in the fixture's JSONL files.
CASES = {
    # 40x40, GT [10,10,30,30]; pred px [15,10,35,30]: inter 15*20=300, union 400+400-300=500.
    "refcoco/val/101": (sif(FULL, f"[{box(0.375, 0.25, 0.875, 0.75)}]"), 0.6, 0.6),
    # 40x40, GT [0,0,20,20]; pred px [0,0,20,10]: IoU exactly 0.5, which is not > 0.5: a miss.
    "refcoco/val/102": (sif(FULL, f"[{box(0, 0, 0.5, 0.25)}]"), 0.5, 0.5),
    # 120x40, GT [30,10,90,30]. Per axis: [30,10,90,30] exactly. Square canvas (side 120, image 40 px
    # down): [30,-10,90,50], inter 60*20=1200, union 60*60=3600 -> 1/3.
    "refcoco/val/103": (sif(FULL, f"[{box(0.25, 0.25, 0.75, 0.75)}]"), 1.0, 1 / 3),
    # 120x40, GT [30,20,90,35]; the box written in the square frame ((y+40)/120 = 0.5, 0.625).
    # Square: [30,20,90,35] exactly. Per axis: [30,20,90,25], inter 60*5=300, union 60*15=900 -> 1/3.
    "refcoco+/testA/201": (sif(FULL, f"[{box(0.25, 0.5, 0.75, 0.625)}]"), 1 / 3, 1.0),
    # No area at all: a format failure in both modes.
    "refcoco+/testA/202": ("<think><text>it is everything</text></think><answer>all</answer>", 0.0, 0.0),
    # 30x60, GT [6,12,24,48]. Per axis: [9,12,21,48] inside the GT, 12*36 / 18*36 = 2/3.
    # Square (side 60, image 15 px right): [3,12,27,48] around the GT, 18*36 / 24*36 = 0.75.
    "refcocog/test/301": (sif(FULL, f"[{box(0.3, 0.2, 0.7, 0.8)}]"), 2 / 3, 0.75),
}


@pytest.fixture(scope="module")
def items():
    return BENCHMARK.load(FIX)


def test_registry_returns_this_adapter():
    assert get_benchmark("refcoco") is BENCHMARK and BENCHMARK.name == "refcoco"


def test_load_reads_every_split_found_in_published_order(items):
    assert [i.id for i in items] == list(CASES)
    assert [i.category for i in items] == ["refcoco/val"] * 3 + ["refcoco+/testA"] * 2 + ["refcocog/test"]
    assert all(i.source == i.category and i.benchmark == "refcoco" and i.answer is None for i in items)
    first = items[0]
    assert first.question == "cat on the left"
    assert first.images == ["train2014/COCO_train2014_000000000001.jpg"]
    assert first.boxes == [[10.0, 10.0, 30.0, 30.0]] and (first.width, first.height) == (40, 40)
    assert (items[2].width, items[2].height) == (120, 40) and (items[5].width, items[5].height) == (30, 60)


def test_fixture_images_match_their_declared_sizes(items):
    for it in items:
        with Image.open(FIX / it.images[0]) as im:
            assert im.size == (it.width, it.height), it.id


def test_load_limit_keeps_the_first_items(items):
    assert [i.id for i in BENCHMARK.load(FIX, limit=4)] == [i.id for i in items[:4]]
    assert [i.id for i in BENCHMARK.load(FIX, limit=1)] == ["refcoco/val/101"]


def test_prompt_is_the_spec_sentence(items):
    assert BENCHMARK.prompt(items[0]) == (
        "Please provide the bounding box coordinate of the region this sentence describes: cat on the left.")


def test_image_beside_the_jsonl_is_used_when_train2014_lacks_it(tmp_path):
    shutil.copy(FIX / "REC_refcocog_umd_test.jsonl", tmp_path)
    shutil.copy(FIX / "train2014" / "COCO_train2014_000000000003.jpg", tmp_path)
    (it,) = BENCHMARK.load(tmp_path)
    assert it.images == ["COCO_train2014_000000000003.jpg"] and it.id == "refcocog/test/301"


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="REC_refcoco_unc_val.jsonl"):
        BENCHMARK.load(tmp_path)
    shutil.copy(FIX / "REC_refcocog_umd_test.jsonl", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train2014/COCO_train2014_000000000003\.jpg"):
        BENCHMARK.load(tmp_path)
    shutil.copytree(FIX / "train2014", tmp_path / "train2014")
    line = json.loads((FIX / "REC_refcocog_umd_test.jsonl").read_text())
    (tmp_path / "REC_refcocog_umd_test.jsonl").write_text(json.dumps({**line, "bbox": [1, 2, 3]}) + "\n")
    with pytest.raises(ValueError, match=r"REC_refcocog_umd_test\.jsonl:1: bbox must be 4 numbers"):
        BENCHMARK.load(tmp_path)
    (tmp_path / "REC_refcocog_umd_test.jsonl").write_text((json.dumps(line) + "\n") * 2)
    with pytest.raises(ValueError, match="duplicate item id 'refcocog/test/301'"):
        BENCHMARK.load(tmp_path)


def responses():
    return {k: v[0] for k, v in CASES.items()}


@pytest.mark.parametrize("scoring, col", [(Scoring.STRICT, 1), (Scoring.ORIGINAL, 2)])
def test_hand_computed_ious(items, scoring, col):
    s = BENCHMARK.score(items, responses(), scoring)
    assert s.scoring is scoring and s.benchmark == "refcoco"
    for r in s.items:
        expected = CASES[r.id][col]
        assert r.iou == pytest.approx(expected, abs=1e-9), r.id
        assert r.correct is (expected > 0.5 + 1e-9), r.id


def test_modes_differ_exactly_on_the_non_square_images(items):
    strict = {r.id: r.iou for r in BENCHMARK.score(items, responses(), Scoring.STRICT).items}
    orig = {r.id: r.iou for r in BENCHMARK.score(items, responses(), Scoring.ORIGINAL).items}
    differ = {k for k in strict if abs(strict[k] - orig[k]) > 1e-9}
    square = {i.id for i in items if i.width == i.height}
    assert differ == {i.id for i in items} - square == {"refcoco/val/103", "refcoco+/testA/201", "refcocog/test/301"}


def test_metrics_strict(items):
    s = BENCHMARK.score(items, responses(), Scoring.STRICT)
    m = s.metrics
    assert m["n"] == 6 and m["format_failures"] == 1 and m["skipped"] == 0
    assert m["overall"] == pytest.approx(3 / 6)  # 101, 103, 301
    assert m["category/refcoco/val"] == pytest.approx(2 / 3)
    assert m["category/refcoco+/testA"] == 0 and m["category/refcocog/test"] == 1
    assert m["mean_iou"] == pytest.approx((0.6 + 0.5 + 1 + 1 / 3 + 0 + 2 / 3) / 6)
    assert s.intervals["overall"] == wilson(3, 6) and s.intervals["category/refcoco/val"] == wilson(2, 3)
    assert {k for k in m if k.startswith("category/")} == {
        "category/refcoco/val", "category/refcoco+/testA", "category/refcocog/test"}
    assert "mean_iou" not in s.intervals  # a mean IoU is not a proportion
    failed = next(r for r in s.items if r.id == "refcoco+/testA/202")
    assert failed.format_failure and not failed.correct and failed.parsed is None and failed.note == "no <area>"
    assert next(r for r in s.items if r.id == "refcoco/val/103").parsed == "[30.00, 10.00, 90.00, 30.00]"


def test_metrics_original(items):
    m = BENCHMARK.score(items, responses(), Scoring.ORIGINAL).metrics
    assert m["overall"] == pytest.approx(3 / 6)  # 101, 201, 301
    assert m["category/refcoco/val"] == pytest.approx(1 / 3) and m["category/refcoco+/testA"] == 0.5
    assert m["format_failures"] == 1
    assert m["mean_iou"] == pytest.approx((0.6 + 0.5 + 1 / 3 + 1 + 0 + 0.75) / 6)


GOOD = box(0.375, 0.25, 0.875, 0.75)  # IoU 0.6 with item 101's GT (a hit)
BAD = box(0.9, 0.9, 1, 1)  # no overlap with it


@pytest.mark.parametrize("response, strict_iou, original_iou", [
    (sif(FULL, f"[{GOOD}, {BAD}]"), 0.6, None),  # several boxes: strict takes the first; the original fails
    (sif(FULL, f"[{BAD}, {GOOD}]"), 0.0, None),
    (sif(FULL, '[{"bbox_2d":[0.375,0.25,0.875,0.75]}]'), None, 0.6),  # no depth: not a SIF box
    (sif(FULL, GOOD), 0.6, 0.6),  # a lone object is read by both
    (sif(f"[{GOOD}]", "[{not json"), None, None),  # a broken last area: no falling back to an earlier one
    (sif(f"[{GOOD}]", f"[{BAD}]"), 0.0, 0.0),  # the last area counts, not the best one
    (sif(f"[{GOOD}]") + f"<area>[{BAD}", None, 0.6),  # unclosed last area: the original reads the earlier one
    (sif(FULL, f"[{box(0.875, 0.25, 0.375, 0.75)}]"), 0.0, 0.0),  # inverted box: no area, IoU 0
    (f"<area>[{GOOD}]</area>", 0.6, 0.6),  # only the area matters for grounding
])
def test_reading_the_last_area(items, response, strict_iou, original_iou):
    item = items[0]
    for scoring, expected in ((Scoring.STRICT, strict_iou), (Scoring.ORIGINAL, original_iou)):
        (r,) = BENCHMARK.score([item], {item.id: response}, scoring).items
        assert r.format_failure is (expected is None), scoring
        assert r.iou == pytest.approx(expected or 0.0), scoring
        assert r.correct is ((expected or 0.0) > 0.5), scoring
        assert bool(r.note) is (expected is None), scoring


def _calculation_py_iou(pred_norm, gt, w, h):
    """Independent oracle: the original calculation.py's arithmetic (prediction times max(W, H), ground
    truth shifted onto the centred square canvas by the integer offset), with a plain IoU."""
    s = max(w, h)
    dx, dy = ((h - w) // 2, 0) if w < h else (0, (w - h) // 2)
    p = [v * s for v in pred_norm]
    g = [gt[0] + dx, gt[1] + dy, gt[2] + dx, gt[3] + dy]
    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = iw * ih
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter)


def test_original_frame_agrees_with_the_original_arithmetic(items):
    rng = random.Random(0)
    for it in items:
        for _ in range(50):
            x1, y1 = rng.uniform(0, 0.6), rng.uniform(0, 0.6)
            pred = (round(x1, 3), round(y1, 3), round(x1 + rng.uniform(0.05, 0.4), 3), round(y1 + rng.uniform(0.05, 0.4), 3))
            (r,) = BENCHMARK.score([it], {it.id: sif(f"[{box(*pred)}]")}, Scoring.ORIGINAL).items
            assert r.iou == pytest.approx(_calculation_py_iou(pred, it.boxes[0], it.width, it.height), abs=1e-9)


def test_predicted_box_in_pixels():
    text = sif(f"[{box(0.25, 0.25, 0.75, 0.75)}]")
    assert predicted_box(text, 120, 40, "strict") == ((30.0, 10.0, 90.0, 30.0), "")
    assert predicted_box(text, 120, 40, "original") == ((30.0, -10.0, 90.0, 50.0), "")
    assert predicted_box("no box", 120, 40, "strict") == (None, "no <area>")


def test_missing_response_is_an_error_not_a_miss(items):
    with pytest.raises(ValueError, match="no response for 1 item"):
        BENCHMARK.score(items, {k: v for k, v in responses().items() if k != "refcocog/test/301"}, Scoring.STRICT)


def test_items_jsonl_round_trip_scores_the_same(items, tmp_path):
    again = read_items(write_items(tmp_path / "items.jsonl", items))
    a = BENCHMARK.score(items, responses(), Scoring.STRICT)
    b = BENCHMARK.score(again, responses(), Scoring.STRICT)
    assert a.metrics == b.metrics and [r.to_json() for r in a.items] == [r.to_json() for r in b.items]


def test_split_table_covers_the_eight_published_files():
    assert len(SPLITS) == 8 and len({f for _, f in SPLITS}) == 8
    assert all(f.startswith("REC_") and f.endswith(".jsonl") for _, f in SPLITS)
