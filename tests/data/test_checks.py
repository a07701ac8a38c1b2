"""Tests of the Great Expectations record suite (sifthinker.data.checks) and the record table.

GX is slow to import and each validation run has fixed overhead, so the dataset folder is built once per
module and each corruption test does a single run on a modified copy of the records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sifthinker.data.checks import (
    CheckResult,
    DataValidationError,
    assert_valid,
    build_suite,
    check_dataset,
    check_records,
)
from sifthinker.data.table import records_table

GT = [0.1, 0.2, 0.3, 0.4]


def area(boxes: list[tuple[list, float]]) -> str:
    items = ",".join(f'{{"bbox_2d":[{",".join(str(v) for v in b)}],"depth":{d}}}' for b, d in boxes)
    return f"<area>[{items}]</area>"


def make_trace(last=((GT, 0.25),), first=(([0, 0, 1, 1], 0.5),), answer="yes") -> str:
    return (f"<think>\n{area(list(first))}\n<text>The whole image shows a table.</text>\n"
            f"{area(list(last))}\n<text>The cup is on the table.</text>\n</think>\n<answer>{answer}</answer>")


def make_record(i: int, category: str) -> dict:
    n = f"{i:06d}"
    image, depth_image, depth_map = f"images/{n}.png", f"depth/{n}.png", f"depth/{n}.npy"
    return {
        "id": f"synthetic-s0-{n}", "dataset": "synthetic", "source": "synthetic", "split": "train",
        "category": category, "answer_type": "yes_no",
        "image": image, "depth_image": depth_image, "depth_map": depth_map,
        "width": 8, "height": 6, "box_frame": "norm",
        "problem": "Is there a cup on the table?", "response": "yes",
        "normalized_solution_round": {"bbox_3d": [list(GT)], "illegal_content": False},
        "messages": [{"role": "user", "content": "Original image: <image>\nDepth image: <image>\nIs there a cup?"},
                     {"role": "assistant", "content": make_trace()}],
        "images": [image, depth_image],
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sif")
    (root / "images").mkdir()
    (root / "depth").mkdir()
    records = [make_record(i, cat) for i, cat in enumerate(["existence", "existence", "depth", "depth"])]
    for r in records:
        Image.new("RGB", (8, 6), (200, 30, 30)).save(root / r["image"])
        Image.new("RGB", (8, 6), (30, 30, 200)).save(root / r["depth_image"])
        np.save(root / r["depth_map"], np.linspace(0, 1, 48, dtype=np.float16).reshape(6, 8))
    (root / "records.json").write_text(json.dumps(records))
    return root


@pytest.fixture
def records(dataset) -> list[dict]:
    return json.loads((dataset / "records.json").read_text())


def failed(result: CheckResult) -> set[str]:
    """Names of the failed checks (each failure line starts with ``check_name:``)."""
    return {line.split(":", 1)[0] for line in result.failures}


def set_trace(rec: dict, text: str) -> None:
    rec["messages"][1]["content"] = text


# ---- table (pure python, no GX run) ----------------------------------------------------------------


def test_records_table_derived_columns(dataset, records):
    records[1]["normalized_solution_round"]["bbox_3d"] = [[0.3, 0.2, 0.1, 1.2]]
    set_trace(records[2], make_trace(last=((GT, 1.5),)))
    del records[3]["image"]
    df = records_table(records, dataset)
    assert len(df) == 4
    r0, r1, r2, r3 = (df.iloc[i] for i in range(4))
    assert r0.trace_valid and r0.trace_problems == "" and r0.last_area_matches_gt
    assert r0.first_area_is_full_image and r0.image_exists and r0.depth_map_exists and r0.images_exist
    assert (r0.n_gt_boxes, r0.gt_min_coord, r0.gt_max_coord) == (1, 0.1, 0.4)
    assert (r0.trace_min_depth, r0.trace_max_depth) == (0.25, 0.5)
    assert not r1.gt_x2_gt_x1 and r1.gt_y2_gt_y1 and r1.gt_max_coord == 1.2
    assert r1.last_area_matches_gt is not None and not r1.last_area_matches_gt
    assert not r2.trace_valid and "depth" in r2.trace_problems and r2.trace_max_depth == 1.5
    assert r2.last_area_matches_gt is None  # not judged on an invalid trace: no cascade of failures
    assert r3.image is None and not r3.image_exists
    assert list(df.category_balance) == [1.0, 1.0, 1.0, 1.0]


def test_last_area_compared_as_rounded_sets(dataset, records):
    b2 = [0.5, 0.5, 0.7, 0.9]
    records[0]["normalized_solution_round"]["bbox_3d"] = [[0.10001, 0.2, 0.3, 0.4], b2]
    set_trace(records[0], make_trace(last=((b2, 0.3), (GT, 0.25))))  # other order
    assert records_table(records, dataset).iloc[0].last_area_matches_gt


# ---- the suite ---------------------------------------------------------------------------------------


# the record schema (docs/architecture.md): every field must be present, the string ones non-empty
SCHEMA_FIELDS = ["id", "dataset", "source", "split", "category", "image", "depth_image", "depth_map", "problem",
                 "response", "messages", "images", "box_frame", "normalized_solution_round"]
NOT_STRINGS = {"messages", "images", "normalized_solution_round"}
RULES = ["box_frame_norm", "ids_unique", "split_known", "source_known", "no_duplicate_items", "gt_boxes_present",
         "gt_boxes_wellformed", "gt_boxes_in_unit_min", "gt_boxes_in_unit_max", "gt_x2_gt_x1", "gt_y2_gt_y1",
         "gt_rounded_3dp", "trace_valid", "trace_depth_in_unit_min", "trace_depth_in_unit_max",
         "first_area_full_image", "last_area_matches_gt", "sif50k_last_area_near_gt", "image_exists",
         "depth_image_exists", "depth_map_exists", "images_exists", "paths_relative", "synthetic_categories",
         "viscot_no_text_subsets", "tallyqa_counting", "tallyqa_count_answers", "category_balance"]
N_EXPECTATIONS = 54  # 1 + 14 required + 11 non-empty + 28 rules; a dropped rule changes it


def test_suite_is_named_and_has_every_expectation():
    suite = build_suite()
    assert suite.name == "sif_records"
    checks = [e.meta["check"] for e in suite.expectations]
    assert checks == (["non_empty"] + [f"required_{f}" for f in SCHEMA_FIELDS]
                      + [f"nonempty_{f}" for f in SCHEMA_FIELDS if f not in NOT_STRINGS] + RULES)
    assert len(checks) == N_EXPECTATIONS


def test_valid_dataset_passes(dataset):
    result = assert_valid(dataset)  # reads records.json; raises on any failure
    # every expectation ran (an empty suite would "pass" too)
    assert (result.success, result.failures, result.checked) == (True, [], N_EXPECTATIONS)


@pytest.mark.parametrize(
    "corrupt, expected, mentions",
    [
        pytest.param(lambda rs: rs[1].pop("problem"), {"required_problem"}, ["synthetic-s0-000001"],
                     id="missing-field"),
        pytest.param(lambda rs: rs[2].update(id=rs[0]["id"]), {"ids_unique"}, ["synthetic-s0-000000"],
                     id="duplicate-id"),
        pytest.param(lambda rs: rs[0]["normalized_solution_round"].update(bbox_3d=[[0.1, 0.2, 1.3, 0.4]]),
                     {"gt_boxes_in_unit_max", "last_area_matches_gt"}, ["1.3"], id="box-out-of-range"),
        pytest.param(lambda rs: rs[3]["normalized_solution_round"].update(bbox_3d=[[0.3, 0.2, 0.1, 0.4]]),
                     {"gt_x2_gt_x1", "last_area_matches_gt"}, ["synthetic-s0-000003"], id="x2-lt-x1"),
        pytest.param(lambda rs: set_trace(rs[1], make_trace(last=((GT, 1.5),))),
                     {"trace_depth_in_unit_max", "trace_valid"}, ["1.5"], id="bad-depth"),
        pytest.param(lambda rs: set_trace(rs[2], make_trace().replace("<answer>yes</answer>", "")),
                     {"trace_valid"}, ["expected exactly one <answer>"], id="invalid-trace"),
        pytest.param(lambda rs: set_trace(rs[0], make_trace(last=(([0.5, 0.5, 0.6, 0.6], 0.25),))),
                     {"last_area_matches_gt"}, ["0.6"], id="last-area-not-gt"),
        pytest.param(lambda rs: set_trace(rs[0], make_trace(first=(([0, 0, 0.5, 1], 0.5),))),
                     {"first_area_full_image"}, ["synthetic-s0-000000", "[[0.0, 0.0, 0.5, 1.0]]"], id="first-area-not-full"),
        pytest.param(lambda rs: rs[3].update(image="images/gone.png", images=["images/gone.png", rs[3]["depth_image"]]),
                     {"image_exists", "images_exists"}, ["images/gone.png"], id="missing-image-file"),
        pytest.param(lambda rs: rs.extend(dict(rs[0], id=f"extra-{i}") for i in range(4)),
                     {"category_balance"}, ["existence", "depth"], id="unbalanced-categories"),
        pytest.param(lambda rs: rs[1].update(box_frame="pixel"), {"box_frame_norm"}, ["'pixel'"],
                     id="wrong-box-frame"),
        pytest.param(lambda rs: rs[1].update(split="validation"), {"split_known"}, ["validation"],
                     id="unknown-split"),
        # per source (records 0 and 2 change source together, so the synthetic rest stays balanced)
        pytest.param(lambda rs: [rs[i].update(source="flickr") for i in (0, 2)], {"source_known"}, ["'flickr'"],
                     id="unknown-source"),
        pytest.param(lambda rs: [rs[i].update(source_image="x/1.jpg", shard=f"0-0000{i}") for i in (1, 3)],
                     {"no_duplicate_items"}, ["synthetic-s0-000001", "shard='0-00003'"], id="duplicate-across-shards"),
        pytest.param(lambda rs: [rs[i].update(source="viscot", category="docvqa") for i in (0, 2)],
                     {"viscot_no_text_subsets"}, ["docvqa"], id="viscot-text-subset"),
        pytest.param(lambda rs: [rs[i].update(source="tallyqa", category="counting", response="many")
                                 for i in (0, 2)], {"tallyqa_count_answers"}, ["where source == \"tallyqa\""],
                     id="tallyqa-not-a-count"),
        pytest.param(lambda rs: [(rs[i].update(source="sif50k"), set_trace(rs[i], make_trace(last=(([0.6, 0.6, 0.9, 0.9], 0.2),))))
                                 for i in (0, 2)], {"sif50k_last_area_near_gt"}, ["synthetic-s0-000000"],
                     id="sif50k-last-area-far"),
        pytest.param(lambda rs: [rs[i].update(category="shape") for i in (0, 2)],
                     {"synthetic_categories", "category_balance"}, ["shape"], id="synthetic-unknown-category"),
    ],
)
def test_corruption_fails_the_right_expectation(dataset, records, corrupt, expected, mentions):
    corrupt(records)
    with pytest.raises(DataValidationError) as info:
        assert_valid(records, dataset)
    result = info.value.result
    assert not result.success
    assert failed(result) == expected, result.failures
    message = str(info.value)
    for name in expected:
        assert name in message
    for text in mentions:
        assert text in message, message


def test_imported_traces_need_only_end_near_the_gt(dataset, records):
    """An imported SIF-50K trace ends near, not exactly on, its GT (a VLM wrote it): no failure for that."""
    for i in (0, 2):
        records[i]["source"] = "sif50k"
        set_trace(records[i], make_trace(last=(([0.1, 0.2, 0.31, 0.4], 0.25),)))
    assert check_records(records, dataset).success


def test_balance_tolerance_is_configurable(dataset, records):
    records.extend(dict(records[0], id=f"extra-{i}") for i in range(4))  # shares 0.75 / 0.25
    assert check_records(records, dataset, balance_tolerance=0.6).success


def test_unreadable_inputs(tmp_path):
    path = tmp_path / "records.json"
    missing = check_dataset(tmp_path)
    assert (missing.success, missing.failures, missing.checked) == (False, [f"{path}: missing"], 0)
    path.write_text('{"id": 1}')
    assert check_dataset(tmp_path).failures == [f"{path}: expected a JSON list of records, got dict"]
    path.write_text("{")
    assert check_dataset(tmp_path).failures[0].startswith(f"{path}: not valid JSON (")
    path.write_text("[]")
    assert failed(check_dataset(tmp_path)) == {"non_empty"}
    with pytest.raises(TypeError, match="root is required with a list of records"):
        assert_valid([], None)
