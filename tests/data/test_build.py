"""Dataset build: records follow the schema, traces validate, rejections are reported with reasons, and a
build is all or nothing for its target (an interrupted one keeps its finished shards to resume)."""

import json

import numpy as np
import pytest
from PIL import Image

from sifthinker.data.build import SourceItem, SyntheticSource, build_records, load_records
from sifthinker.method import trace


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
    reason = "too few focus steps: 1 (the evidence fills the image)"
    assert summary.rejections == [{"id": "full", "source": "handmade", "reason": reason}]
    assert summary.headline() == "2 train records (1 rejected)"
    assert (tmp_path / "rejections.jsonl").read_text() == json.dumps(summary.rejections[0]) + "\n"
    recs = load_records(tmp_path)
    assert [r["id"] for r in recs] == ["a", "b"]
    r = recs[1]
    assert r["normalized_solution_round"]["bbox_3d"] == [[0.05, 0.1, 0.15, 0.2], [0.75, 0.6, 0.95, 0.9]]
    t = trace.parse(r["messages"][1]["content"])
    assert t.steps[0].boxes[0].xyxy() == (0.0, 0.0, 1.0, 1.0)
    assert [b.xyxy() for b in t.last_boxes] == [tuple(b) for b in r["normalized_solution_round"]["bbox_3d"]]
    assert t.answer == "2" and "I count 2" in t.steps[-1].text
    # item 2 of the stream, in the second shard (2 items a shard for 2 records); paths relative to the folder
    assert (r["image"], r["depth_image"], r["depth_map"], r["shard"]) == (
        "shards/0-00001/images/000002.png", "shards/0-00001/depth/000002.png", "shards/0-00001/depth/000002.npy",
        "0-00001")
    for key in ("image", "depth_image", "depth_map"):
        assert (tmp_path / r[key]).is_file()
    assert np.load(tmp_path / r["depth_map"]).dtype == np.float16
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_records"] == 2 and manifest["source"] == "handmade"
    assert manifest["rejections"] == summary.rejections and "out_dir" not in manifest
    # "a": the 20x10 box at (10,10) in 200x100 expands to (0,0,66,56) (tests/data/test_trajectory.py); "b": both
    # boxes grow by 4 px (margins 0.1 and 0.2 over 5 steps): (28*18 + 48*38) / (20*10 + 40*30)
    assert summary.expansion_area_ratio == pytest.approx((66 * 56 / 200 + (28 * 18 + 48 * 38) / 1400) / 2, abs=1e-3)


def test_too_many_rejections_stop_the_build(tmp_path):
    with pytest.raises(RuntimeError, match="rejected"):
        build_records(ListSource(), 5, 0, tmp_path, progress=False, max_rejections=0)


def test_synthetic_build_every_trace_starts_full_and_ends_at_gt(tmp_path):
    summary = build_records(SyntheticSource(), 24, 0, tmp_path, progress=False)
    assert summary.num_records == 24 and summary.expansion_area_ratio > 2
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


def test_original_parity_builds_with_the_original_step(tmp_path):
    """D2 under `parity: original`: the centred-box step is 1 pixel, so expanded frames hug the GT."""
    fixed = build_records(SyntheticSource(), 12, 0, tmp_path / "fixed", progress=False)
    orig = build_records(SyntheticSource(), 12, 0, tmp_path / "orig", progress=False, parity="original")
    assert orig.expansion_area_ratio < fixed.expansion_area_ratio
    assert json.loads((tmp_path / "orig" / "build.json").read_text())["parity"] == "original"


# ---- all or nothing: interrupted, failed and repeated builds -----------------------------------------


class InterruptingSource(ListSource):
    """The hand-made items, then Ctrl-C while the builder asks for the next one."""

    def items(self, seed):
        for i, item in enumerate(super().items(seed)):
            if i == 2:
                raise KeyboardInterrupt
            yield item


def _snapshot(folder):
    """Every file under folder with its bytes (None when the folder does not exist)."""
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_interrupted_build_into_a_new_folder_leaves_the_target_absent(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        build_records(InterruptingSource(), 3, 0, out, progress=False, shard_size=1)
    assert not out.exists()
    # the two shards finished before the interruption are kept, beside the target, to resume
    assert _hidden(tmp_path) == [".d.partial"]
    assert sorted(p.name for p in (tmp_path / ".d.partial" / "shards").iterdir()) == ["0-00000", "0-00001"]


def test_interrupted_or_failed_rebuild_keeps_the_previous_dataset(tmp_path):
    out = tmp_path / "d"
    build_records(ListSource(), 2, 0, out, progress=False)
    before = _snapshot(out)
    # records.json, manifest.json, rejections.jsonl, build.json, 2 x shard.json, 2 x (image, depth png, depth npy)
    assert len(before) == 4 + 2 + 2 * 3
    with pytest.raises(KeyboardInterrupt):
        build_records(InterruptingSource(), 3, 0, out, progress=False)
    assert _snapshot(out) == before
    with pytest.raises(RuntimeError, match="rejected"):
        build_records(ListSource(), 5, 0, out, progress=False, max_rejections=0)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.partial", "d"]  # resumable work beside it


def test_rebuild_with_fewer_records_leaves_no_stale_files(tmp_path):
    out = tmp_path / "d"
    build_records(SyntheticSource(96, 72), 6, 0, out, progress=False)
    shard = out / "shards" / "0-00000"
    assert len(list((shard / "images").iterdir())) == 6 and len(list((shard / "depth").iterdir())) == 12
    summary = build_records(SyntheticSource(96, 72), 2, 1, out, progress=False)
    assert summary.out_dir == str(out)
    assert sorted(p.name for p in (shard / "images").iterdir()) == ["000000.png", "000001.png"]
    assert len(list((shard / "depth").iterdir())) == 4
    assert [r["id"] for r in load_records(out)] == ["synthetic-s1-000000", "synthetic-s1-000001"]
    assert _hidden(tmp_path) == []


def test_build_into_an_existing_empty_folder_keeps_its_path(tmp_path):
    out = tmp_path / "artifact"  # a KFP output artifact: created (empty) before the component runs
    out.mkdir()
    summary = build_records(ListSource(), 2, 0, out, progress=False)
    assert summary.out_dir == str(out) and (out / "manifest.json").is_file()
    assert [r["id"] for r in load_records(out)] == ["a", "b"] and _hidden(tmp_path) == []


def test_a_folder_that_is_not_a_dataset_is_never_replaced(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no SIF dataset"):
        build_records(ListSource(), 2, 0, tmp_path / "home", progress=False)
    assert _snapshot(tmp_path / "home") == {"notes.txt": b"keep me"} and _hidden(tmp_path) == []


def test_cli_unwritable_output_is_one_line_without_traceback(tmp_path):
    from click.testing import CliRunner

    from sifthinker.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(main, ["data", "build", "--num", "2", "--out", str(blocker / "x")])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [f"Error: [Errno 20] Not a directory: '{blocker}'"]
    assert blocker.read_text() == "x"


def test_cli_interrupted_build_says_how_to_resume(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from sifthinker.cli import main
    from sifthinker.data import shards

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "_run_part", interrupt)
    out = tmp_path / "d"
    res = CliRunner().invoke(main, ["data", "build", "--num", "3", "--out", str(out)])
    assert res.exit_code == 130
    assert res.output.strip().splitlines()[-1] == (f"interrupted: {out} is unchanged; finished shards are kept, "
                                                   "run the same command again to resume")
    assert "Traceback" not in res.output and not out.exists()
