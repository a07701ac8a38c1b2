"""The source adapters on hand-written fixtures in the published layouts (tests/fixtures/data/*/README.md):
what each record becomes, the D1 switch of Visual-CoT, and one rejection line per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sifthinker.cli import main
from sifthinker.data.build import build, load_records
from sifthinker.data.checks import check_dataset
from sifthinker.data.options import ALL, BuildOptions, Part
from sifthinker.data.sources import SourceSpec, synthetic_item
from sifthinker.method import trace as sif_trace
from sifthinker.method.depth import load_depth_map
from sifthinker.scenes import generate_items

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def run(tmp_path: Path, name: str, rel: str, depth: str = "colour", **options) -> tuple[list[dict], list[dict], Path]:
    spec = SourceSpec(name, input=str(FIXTURES / rel), options=tuple(sorted({"depth": depth, **options}.items())))
    out = tmp_path / name
    build(BuildOptions(parts=(Part(spec, ALL),), depth=depth), out, progress=False)
    rejections = [json.loads(line) for line in (out / "rejections.jsonl").read_text().splitlines()]
    return load_records(out), rejections, out


def reasons(rejections: list[dict]) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in rejections}


def test_synthetic_items_are_made_one_by_one_as_the_stream_makes_them():
    for i, (scene, q) in enumerate(generate_items(8, 11, 96, 72)):
        scene2, q2 = synthetic_item(11, i, 96, 72)
        assert q2.to_dict() == q.to_dict() and np.array_equal(scene2.rgb, scene.rgb)


def test_viscot_filter_boxes_and_rejections(tmp_path):
    records, rejections, out = run(tmp_path, "viscot", "viscot/viscot_363k.json", max_per_subset=2, box_frame="pixel")
    assert [r["id"] for r in records] == ["viscot-flickr30k-1", "viscot-flickr30k-2", "viscot-gqa-6"]
    # fix D1: the square-canvas box becomes the pixel box [30,10,90,30] of the 120x40 image / (W, H)
    assert records[0]["normalized_solution_round"]["bbox_3d"] == [[0.25, 0.25, 0.75, 0.75]]
    assert records[1]["normalized_solution_round"]["bbox_3d"] == [[0.25, 0.251, 0.75, 0.749]]  # converted, no ### box
    assert records[2]["normalized_solution_round"]["bbox_3d"] == [[0.2, 0.2, 0.8, 0.8]]  # tall: canvas padded in x
    assert records[0]["problem"] == "What is on the red banner?" and records[0]["response"] == "a white frame"
    assert (records[0]["category"], records[0]["source"], records[0]["source_image"]) == (
        "flickr30k", "viscot", "cot/flickr30k/wide.jpg")
    # the image is the original file, byte for byte
    assert (out / records[0]["image"]).read_bytes() == (FIXTURES / "viscot/cot_image_data/flickr30k/wide.jpg").read_bytes()
    # one line per bad input, with its reason; docvqa/textcap and the third flickr30k item are filtered, not rejected
    assert len(rejections) == 6 and reasons(rejections[:5]) == {
        "viscot-gqa-7": "missing image file: cot/gqa/missing.jpg",
        "viscot-v7w-8": "corrupt image: cot/v7w/broken.jpg (Truncated File Read)",
        "viscot-vsr-9": "empty or inverted box: [24.0, 8.0, 16.0, 32.0]",
        "viscot-cub-10": "empty question",
        "viscot-openimages-11": "box outside the image: [4.0, 4.0, 56.0, 36.0] in 40x40",
    }
    assert rejections[-1] == {"id": "viscot-vsr-9", "source": "viscot",
                              "reason": "duplicate: the same id or image and question as viscot-vsr-9"}
    assert all(r["source"] == "viscot" for r in rejections)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filtered"]["viscot"]["dropped"] == {"docvqa (text subset)": 1, "flickr30k (over 2)": 1,
                                                         "textcap (text subset)": 1}
    assert check_dataset(out).success, check_dataset(out).failures


def test_viscot_box_frame_padded_reproduces_the_original_misreading(tmp_path):
    fixed, _, _ = run(tmp_path / "a", "viscot", "viscot/viscot_363k.json", max_per_subset=2, box_frame="pixel")
    padded, _, _ = run(tmp_path / "b", "viscot", "viscot/viscot_363k.json", max_per_subset=2, box_frame="padded")
    # the wide 120x40 image: the square-canvas numbers read per axis put the box 16.7 px lower, a third as tall
    assert padded[0]["normalized_solution_round"]["bbox_3d"] == [[0.25, 0.417, 0.75, 0.583]]
    assert fixed[0]["normalized_solution_round"]["bbox_3d"] == [[0.25, 0.25, 0.75, 0.75]]  # = pixel box / (W, H)
    assert padded[2]["normalized_solution_round"]["bbox_3d"] == [[0.35, 0.2, 0.65, 0.8]]  # tall: x misread
    assert fixed[2]["normalized_solution_round"]["bbox_3d"] == [[0.2, 0.2, 0.8, 0.8]]


def test_viscot_box_frame_from_the_cli_and_parity(tmp_path):
    args = ["data", "build", "--source", "viscot", "--input", str(FIXTURES / "viscot/viscot_363k.json"),
            "--depth", "colour"]
    for extra, name in (([], "fixed"), (["--viscot-box-frame", "padded"], "padded"), (["--parity", "original"], "orig")):
        res = CliRunner().invoke(main, [*args, *extra, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    box = {n: load_records(tmp_path / n)[0]["normalized_solution_round"]["bbox_3d"] for n in ("fixed", "padded", "orig")}
    assert box == {"fixed": [[0.25, 0.25, 0.75, 0.75]], "padded": [[0.25, 0.417, 0.75, 0.583]],
                   "orig": [[0.25, 0.417, 0.75, 0.583]]}


def test_sif50k_import_keeps_traces_and_decodes_depth_once(tmp_path):
    records, rejections, out = run(tmp_path, "sif50k", "sif50k/data/SIF-50K.json")
    assert [r["id"] for r in records] == ["sif50k-000000", "sif50k-000003"]
    released = json.loads((FIXTURES / "sif50k/data/SIF-50K.json").read_text())
    first = records[0]
    assert first["messages"][1]["content"] == released[0]["messages"][1]["content"].strip()  # the trace as released
    assert first["normalized_solution_round"] == released[0]["normalized_solution_round"]
    assert (first["problem"], first["response"], first["category"]) == (
        "What is inside the white frame?", "an orange wall", "flickr30k")
    assert first["source_image"] == "../data/flickr30k/36979.jpg"  # resolved against the JSON's folder
    # the colour PNG (a 0..1 left-to-right gradient, Depth-Anything-V2's rendering) decoded to a float map
    depth = load_depth_map(out / first["depth_map"])
    truth = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (60, 1))
    assert depth.shape == (60, 80) and np.abs(depth - truth).max() <= 1 / 255 + 1e-3
    assert sif_trace.parse(records[1]["messages"][1]["content"]).answer == "2"
    assert reasons(rejections) == {"sif50k-000001": "invalid trace: expected exactly one <answer>, found 0",
                                   "sif50k-000002": "missing image file: ../data/gqa/gone.jpg"}
    assert check_dataset(out).success, check_dataset(out).failures


def test_sif50k_paths_resolve_against_an_image_root(tmp_path):
    # the JSON moved away from its images: --image-root names the folder the ../data/... paths start from
    moved = tmp_path / "elsewhere" / "SIF-50K.json"
    moved.parent.mkdir()
    moved.write_text((FIXTURES / "sif50k/data/SIF-50K.json").read_text())
    res = CliRunner().invoke(main, ["data", "build", "--source", "sif50k", "--input", str(moved), "--image-root",
                                    str(FIXTURES / "sif50k" / "data"), "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in load_records(tmp_path / "d")] == ["sif50k-000000", "sif50k-000003"]


def test_tallyqa_counts_with_several_boxes(tmp_path):
    records, rejections, out = run(tmp_path, "tallyqa", "tallyqa/tallyqa.json")
    assert [r["id"] for r in records] == ["tallyqa-101", "tallyqa-102"]
    assert records[0]["normalized_solution_round"]["bbox_3d"] == [[0.062, 0.083, 0.312, 0.417],
                                                                  [0.625, 0.5, 0.938, 0.917]]
    assert (records[0]["category"], records[0]["answer_type"], records[1]["response"]) == ("counting", "number", "1")
    last = sif_trace.parse(records[0]["messages"][1]["content"]).steps[-1]
    assert len(last.boxes) == 2 and "framed squares" in last.text and "I count 2" in last.text
    assert reasons(rejections) == {"tallyqa-103": "answer does not match the boxes: 3 but 2 boxes",
                                   "tallyqa-104": "no ground-truth boxes",
                                   "tallyqa-105": "answer is not a count: 'many'",
                                   "tallyqa-106": "box outside the image: [10, 10, 80, 30] in 64x48"}
    assert check_dataset(out).success, check_dataset(out).failures


def test_jsonl_users_own_data(tmp_path):
    records, rejections, out = run(tmp_path, "jsonl", "jsonl/items.jsonl")
    assert [r["id"] for r in records] == ["kitchen-1", "street-1"]
    assert (records[0]["category"], records[1]["category"]) == ("counting", "general")
    assert records[1]["answer_type"] == "name"  # inferred from "a grey wall"
    assert "framed square" in records[0]["messages"][1]["content"]  # the given names reach the narration
    assert [r["id"] for r in rejections] == ["jsonl-line3", "missing-1", "corrupt-1", "empty-question",
                                             "inverted-box", "empty-boxes", "street-1"]
    got = reasons(rejections)
    assert got["jsonl-line3"].startswith("invalid JSON: line 3 (")
    assert got["missing-1"] == "missing image file: images/nowhere.jpg"
    assert got["corrupt-1"].startswith("corrupt image: images/corrupt.jpg")
    assert got["inverted-box"] == "empty or inverted box: [44, 40, 20, 90]"
    assert got["empty-boxes"] == "no ground-truth boxes"
    assert got["street-1"] == "duplicate: the same id or image and question as street-1"
    assert check_dataset(out).success, check_dataset(out).failures


def test_jsonl_ground_truth_depth_maps(tmp_path):
    records, rejections, out = run(tmp_path, "jsonl", "jsonl/items.jsonl", depth="gt")
    assert [r["id"] for r in records] == ["kitchen-1"]  # the only line with a depth map
    assert rejections[0] == {"id": "street-1", "source": "jsonl",
                             "reason": "no ground-truth depth map (build with --depth colour or dav2)"}
    depth = load_depth_map(out / records[0]["depth_map"])
    assert np.allclose(depth, np.load(FIXTURES / "jsonl/images/kitchen_depth.npy").astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--source", "viscot"], "--input is required with --source viscot"),
    (["--source", "tallyqa", "--input", "/nowhere/t.json"], "tallyqa: /nowhere/t.json does not exist"),
    (["--source", "synthetic"], "--num is required with --source synthetic (the scenes never run out)"),
    (["--source", "jsonl", "--input", str(FIXTURES / "jsonl/items.jsonl"), "--narrator", "vlm"],
     "--narrator vlm needs --vlm-endpoint (or data.vlm.endpoint in the recipe)"),
])
def test_cli_mistakes_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(main, ["data", "build", *args, "--out", str(tmp_path / "d")])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 1 and lines == [f"Error: {message}"], res.output
    assert not (tmp_path / "d").exists()
