"""Dataset build: records follow the schema, traces validate, rejections are reported with reasons."""

import json

import numpy as np
import pytest
from PIL import Image

from sifthinker import trace
from sifthinker.data.build import SourceItem, SyntheticSource, build_records, load_records


class ListSource:
    """A hand-made source: two good items and one whose evidence fills the image."""

    name = "handmade"

    def items(self, seed):
        depth = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (100, 1))
        img = Image.new("RGB", (200, 100), "white")
        common = dict(image=img, depth=depth, answer_type="yes_no", dataset="handmade")
        yield SourceItem(uid="a", question="Is there a red cube?", answer="yes", category="existence",
                         gt_boxes_px=[(10, 10, 30, 20)], evidence_names=["red cube"], **common)
        yield SourceItem(uid="full", question="Is the image white?", answer="yes", category="attribute",
                         gt_boxes_px=[(0, 0, 200, 100)], evidence_names=["image"], **common)
        yield SourceItem(uid="b", question="How many cubes?", answer="2", category="counting",
                         gt_boxes_px=[(10, 10, 30, 20), (150, 60, 190, 90)],
                         evidence_names=["red cube", "blue cube"], **common)


def test_build_records_from_a_handmade_source(tmp_path):
    summary = build_records(ListSource(), 2, 0, tmp_path, progress=False)
    assert summary.num_records == 2
    assert summary.rejections == [{"id": "full", "reason": "too few focus steps: 1 (the evidence fills the image)"}]
    recs = load_records(tmp_path)
    assert [r["id"] for r in recs] == ["a", "b"]
    r = recs[1]
    assert r["normalized_solution_round"]["bbox_3d"] == [[0.05, 0.1, 0.15, 0.2], [0.75, 0.6, 0.95, 0.9]]
    t = trace.parse(r["messages"][1]["content"])
    assert t.steps[0].boxes[0].xyxy() == (0.0, 0.0, 1.0, 1.0)
    assert [b.xyxy() for b in t.last_boxes] == [tuple(b) for b in r["normalized_solution_round"]["bbox_3d"]]
    assert t.answer == "2" and "I count 2 matching objects" in t.steps[-1].text
    for key in ("image", "depth_image", "depth_map"):
        assert (tmp_path / r[key]).is_file()
    assert np.load(tmp_path / r["depth_map"]).dtype == np.float16
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_records"] == 2 and manifest["source"] == "handmade"


def test_too_many_rejections_stop_the_build(tmp_path):
    with pytest.raises(RuntimeError, match="rejected"):
        build_records(ListSource(), 5, 0, tmp_path, progress=False, max_rejections=0)


def test_synthetic_build_every_trace_starts_full_and_ends_at_gt(tmp_path):
    summary = build_records(SyntheticSource(), 24, 0, tmp_path, progress=False)
    assert summary.num_records == 24
    for r in load_records(tmp_path):
        t = trace.parse(r["messages"][1]["content"])
        assert [b.xyxy() for b in t.steps[0].boxes] == [(0.0, 0.0, 1.0, 1.0)]
        assert sorted(b.xyxy() for b in t.last_boxes) == sorted(tuple(b) for b in r["normalized_solution_round"]["bbox_3d"])
        assert 3 <= len(t.steps) <= 5 and r["box_frame"] == "norm"
    # same seed, same dataset
    other = tmp_path / "again"
    build_records(SyntheticSource(), 24, 0, other, progress=False)
    a = [r["messages"][1]["content"] for r in load_records(tmp_path)]
    b = [r["messages"][1]["content"] for r in load_records(other)]
    assert a == b
