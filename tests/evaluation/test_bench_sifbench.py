"""SIF-Bench adapter: a built synthetic split as items, scored with sifthinker.evaluation.metrics."""

import re
import shutil

import pytest

from sifthinker.data.build import SyntheticSource, build_records, load_records
from sifthinker.evaluation.benchmarks import Scoring, get_benchmark
from sifthinker.evaluation.benchmarks.base import read_items, wilson, write_items
from sifthinker.evaluation.benchmarks.sifbench import BENCHMARK
from sifthinker.evaluation.metrics import score_predictions

N = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sifbench") / "eval"
    build_records(SyntheticSource(), N, seed=5, out_dir=root, split="eval", progress=False)
    return root, load_records(root)


@pytest.fixture(scope="module")
def items(data):
    return BENCHMARK.load(data[0])


def own_trace(rec: dict) -> str:
    return rec["messages"][1]["content"]


def without_answer(text: str) -> str:
    out = re.sub(r"\s*<answer>.*?</answer>", "", text, flags=re.DOTALL)
    assert out != text and "<answer>" not in out
    return out


def with_answer(text: str, answer: str) -> str:
    return re.sub(r"<answer>.*?</answer>", f"<answer>{answer}</answer>", text, flags=re.DOTALL)


def test_registry_returns_this_adapter():
    assert get_benchmark("sif-bench") is BENCHMARK and BENCHMARK.name == "sif-bench"


def test_load_maps_records_to_items(data, items):
    root, recs = data
    assert len(items) == N == len(recs)
    for rec, it in zip(recs, items, strict=True):
        assert (it.id, it.benchmark, it.category) == (rec["id"], "sif-bench", rec["category"])
        assert it.question == rec["problem"] and it.answer == rec["response"] and it.options is None
        assert it.images == [rec["image"]] and (it.width, it.height) == (rec["width"], rec["height"])
        w, h = rec["width"], rec["height"]
        gt = rec["normalized_solution_round"]["bbox_3d"]
        assert it.boxes == [[x1 * w, y1 * h, x2 * w, y2 * h] for x1, y1, x2, y2 in gt]
        assert it.extra == {"depth_image": rec["depth_image"], "depth_map": rec["depth_map"],
                            "answer_type": rec["answer_type"], "data_dir": str(root.resolve())}
        assert (root / it.images[0]).is_file() and (root / it.extra["depth_image"]).is_file()
        assert BENCHMARK.prompt(it) == rec["problem"]


def test_load_limit_and_missing_folder(data, tmp_path):
    assert [i.id for i in BENCHMARK.load(data[0], limit=3)] == [r["id"] for r in data[1][:3]]
    with pytest.raises(FileNotFoundError, match="records.json"):
        BENCHMARK.load(tmp_path)


@pytest.mark.parametrize("scoring", list(Scoring))
def test_own_trace_scores_one(data, items, scoring):
    s = BENCHMARK.score(items, {r["id"]: own_trace(r) for r in data[1]}, scoring)
    m = s.metrics
    assert m["overall"] == 1 and m["accuracy"] == 1 and m["format_validity"] == 1 and m["format_failures"] == 0
    assert m["grounding_acc50"] == 1 and m["mean_iou"] == pytest.approx(1.0) and m["n_grounding"] == N
    assert m["depth_consistency"] == 1 and m["n_depth"] == N and m["n"] == N and m["skipped"] == 0
    cats = {r["category"] for r in data[1]}
    assert {k for k in m if k.startswith("category/")} == {f"category/{c}" for c in cats}
    assert all(m[f"category/{c}"] == 1 for c in cats)
    assert s.intervals["overall"] == wilson(N, N) and s.scoring is scoring
    assert all(r.correct and not r.format_failure and r.iou == pytest.approx(1.0) for r in s.items)


def test_missing_answer_is_wrong_in_strict_and_right_in_original(data, items):
    resp = {r["id"]: without_answer(own_trace(r)) for r in data[1]}
    strict = BENCHMARK.score(items, resp, Scoring.STRICT)
    orig = BENCHMARK.score(items, resp, Scoring.ORIGINAL)
    assert strict.metrics["overall"] == 0 and strict.metrics["accuracy"] == 0
    assert orig.metrics["overall"] == 1 and orig.metrics["accuracy"] == 1
    for s in (strict, orig):  # only the answer is forgiven: the box and the format verdict stand
        assert s.metrics["format_failures"] == N and s.metrics["format_validity"] == 0
        assert s.metrics["grounding_acc50"] == 1
    assert [r.correct for r in strict.items] == [False] * N and [r.correct for r in orig.items] == [True] * N
    assert orig.notes == [f"original scoring (E1): {N} item(s) without an <answer> counted as correct"]
    assert strict.items[0].note == "no <answer>" and strict.notes == []


def test_blank_answer_counts_as_missing(data, items):
    rec = data[1][0]
    resp = {rec["id"]: with_answer(own_trace(rec), "  ")}
    assert BENCHMARK.score(items[:1], resp, Scoring.STRICT).metrics["overall"] == 0
    assert BENCHMARK.score(items[:1], resp, Scoring.ORIGINAL).metrics["overall"] == 1


def test_wrong_answer_is_wrong_in_both_modes(data, items):
    rec = data[1][0]
    resp = {rec["id"]: with_answer(own_trace(rec), "no idea")}
    for scoring in Scoring:
        s = BENCHMARK.score(items[:1], resp, scoring)
        assert s.metrics["overall"] == 0 and s.metrics["format_failures"] == 0 and s.metrics["format_validity"] == 1


def test_mixed_responses_per_category(data, items):
    # item 0: right, 1: no answer, 2: wrong answer, the rest: right.
    recs = data[1]
    resp = {r["id"]: own_trace(r) for r in recs}
    resp[recs[1]["id"]] = without_answer(own_trace(recs[1]))
    resp[recs[2]["id"]] = with_answer(own_trace(recs[2]), "no idea")
    strict = BENCHMARK.score(items, resp, Scoring.STRICT).metrics
    orig = BENCHMARK.score(items, resp, Scoring.ORIGINAL).metrics
    assert strict["overall"] == pytest.approx((N - 2) / N) and orig["overall"] == pytest.approx((N - 1) / N)
    assert strict["format_failures"] == orig["format_failures"] == 1
    for cat in {r["category"] for r in recs}:
        members = [i for i, r in enumerate(recs) if r["category"] == cat]
        assert strict[f"category/{cat}"] == pytest.approx(sum(i not in (1, 2) for i in members) / len(members))
        assert orig[f"category/{cat}"] == pytest.approx(sum(i != 2 for i in members) / len(members))


def test_strict_matches_the_held_out_metrics(data, items):
    # The same numbers as today's evaluate stage (metrics.score_predictions on the records themselves).
    root, recs = data
    preds = [own_trace(r) if i % 3 else with_answer(own_trace(r), "2") for i, r in enumerate(recs)]
    preds[1] = own_trace(recs[1]).replace("</think>", "")  # invalid format, answer still read
    preds[4] = re.sub(r'"bbox_2d":\[[^\]]*\]', '"bbox_2d":[0,0,0.05,0.05]', own_trace(recs[4]))  # boxes moved
    ref = score_predictions(recs, preds, root).metrics
    got = BENCHMARK.score(items, {r["id"]: p for r, p in zip(recs, preds, strict=True)}, Scoring.STRICT).metrics
    for key in ("accuracy", "format_validity", "grounding_acc50", "mean_iou", "depth_consistency", "n"):
        assert got[key] == pytest.approx(ref[key]), key
    assert {k.split("/", 1)[1]: v for k, v in got.items() if k.startswith("category/")} == pytest.approx(
        {k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith("accuracy/")})
    assert got["accuracy"] < 1 and got["format_validity"] < 1 and got["grounding_acc50"] < 1


def test_missing_response_is_an_error(data, items):
    with pytest.raises(ValueError, match="no response for 1 item"):
        BENCHMARK.score(items, {r["id"]: own_trace(r) for r in data[1][1:]}, Scoring.STRICT)


def test_items_jsonl_round_trip_scores_the_same(data, items, tmp_path):
    again = read_items(write_items(tmp_path / "items.jsonl", items))
    resp = {r["id"]: own_trace(r) for r in data[1]}
    a, b = BENCHMARK.score(items, resp, Scoring.STRICT), BENCHMARK.score(again, resp, Scoring.STRICT)
    assert a.metrics == b.metrics


def test_missing_depth_map_fails_loudly(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data[0], root)
    items = BENCHMARK.load(root, limit=1)
    (root / items[0].extra["depth_map"]).unlink()
    with pytest.raises(FileNotFoundError, match="depth map"):
        BENCHMARK.score(items, {items[0].id: own_trace(data[1][0])}, Scoring.STRICT)
