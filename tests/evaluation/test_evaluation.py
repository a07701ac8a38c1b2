import base64
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sifthinker.config.run_config import RunConfig
from sifthinker.evaluation import FakeOracleGenerator, evaluate, score_predictions
from sifthinker.evaluation.metrics import depth_consistency
from sifthinker.method.depth import save_depth_map
from sifthinker.method.trace import Box

W, H = 64, 48


def trace(last: str, answer: str | None = "red cube", full_depth: str = "0.5") -> str:
    ans = f"\n<answer>{answer}</answer>" if answer is not None else ""
    return (f'<think>\n<area>[{{"bbox_2d":[0,0,1,1],"depth":{full_depth}}}]</area>\n<text>whole image</text>\n'
            f"<area>[{last}]</area>\n<text>the evidence</text>\n</think>{ans}")


LEFT_TOP = '{"bbox_2d":[0,0,0.5,0.5],"depth":0.2}'  # true depth 0.2 (left half of the map)


def make_dataset(root: Path, n: int = 4) -> list[dict]:
    """Hand-made eval set: left half of every depth map at 0.2, right half at 0.8; GT = top-left quarter."""
    depth = np.full((H, W), 0.8, dtype=np.float32)
    depth[:, : W // 2] = 0.2
    records = []
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "depth").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (30 * i, 100, 100)).save(root / f"images/{i}.png")
        Image.new("RGB", (W, H), (200, 40, 40)).save(root / f"depth/{i}.png")
        save_depth_map(root / f"depth/{i}.npy", depth)
        cat = "depth" if i % 2 == 0 else "counting"
        resp, atype = ("red cube", "name") if cat == "depth" else ("2", "number")
        records.append({
            "id": f"t-{i}", "category": cat, "answer_type": atype, "response": resp,
            "problem": "Which is closer?" if cat == "depth" else "How many cubes?",
            "image": f"images/{i}.png", "depth_image": f"depth/{i}.png", "depth_map": f"depth/{i}.npy",
            "width": W, "height": H, "box_frame": "norm",
            "normalized_solution_round": {"bbox_3d": [[0, 0, 0.5, 0.5]], "illegal_content": False},
            "messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": trace(LEFT_TOP, resp)}],
            "images": [f"images/{i}.png", f"depth/{i}.png"],
        })
    (root / "records.json").write_text(json.dumps(records))
    return records


@pytest.fixture
def ds(tmp_path):
    root = tmp_path / "eval"
    return root, make_dataset(root)


# ---- metrics -----------------------------------------------------------------------------------


def test_perfect_predictions_score_one(ds):
    root, recs = ds
    s = score_predictions(recs, [r["messages"][1]["content"] for r in recs], root)
    m = s.metrics
    assert m["n"] == 4 and m["format_validity"] == 1 and m["accuracy"] == 1
    assert m["accuracy/depth"] == 1 and m["accuracy/counting"] == 1
    assert m["grounding_acc50"] == 1 and m["mean_iou"] == pytest.approx(1.0)
    assert m["depth_consistency"] == 1 and m["n_depth"] == 4 and m["n_grounding"] == 4


def test_missing_answer_is_wrong_and_invalid(ds):
    root, recs = ds
    s = score_predictions(recs[:1], [trace(LEFT_TOP, answer=None)], root)
    it = s.items[0]
    assert not it.format_valid and it.answer is None and it.answer_score == 0 and not it.correct
    assert it.grounding_hit  # the box is still read leniently
    assert s.metrics["accuracy"] == 0 and s.metrics["accuracy/depth"] == 0


def test_invalid_format_with_right_answer_counts_answer_and_box(ds):
    root, recs = ds
    pred = trace(LEFT_TOP).replace("</think>", "")
    s = score_predictions(recs[:1], [pred], root)
    assert s.metrics["format_validity"] == 0 and s.metrics["accuracy"] == 1 and s.metrics["grounding_acc50"] == 1
    assert s.items[0].format_problems


def test_per_category_accuracy(ds):
    root, recs = ds
    preds = [trace(LEFT_TOP, "red cube"), trace(LEFT_TOP, "3"), trace(LEFT_TOP, "blue sphere"), trace(LEFT_TOP, "two")]
    m = score_predictions(recs, preds, root).metrics
    assert m["accuracy/depth"] == 0.5 and m["accuracy/counting"] == 0.5 and m["accuracy"] == 0.5


@pytest.mark.parametrize("box, hit", [
    ("[0,0,0.5,0.25]", True),    # IoU exactly 0.5: Acc@0.5 is inclusive
    ("[0,0,0.5,0.24]", False),   # IoU 0.48
    ("[0.5,0.5,1,1]", False),    # disjoint
    ("[-0.5,0,0.5,0.5]", True),  # clipped to the image first (as r_box does): IoU 1
])
def test_grounding_threshold(ds, box, hit):
    root, recs = ds
    s = score_predictions(recs[:1], [trace(f'{{"bbox_2d":{box},"depth":0.2}}')], root)
    assert s.items[0].grounding_hit is hit


def test_grounding_uses_union_of_last_area(ds):
    root, recs = ds
    two = '{"bbox_2d":[0,0,0.25,0.5],"depth":0.2}, {"bbox_2d":[0.25,0,0.5,0.5],"depth":0.2}'
    s = score_predictions(recs[:1], [trace(two)], root)
    assert s.items[0].grounding_iou == pytest.approx(1.0)
    # only the last area counts: a perfect first area followed by a wrong last one misses
    wrong_last = trace('{"bbox_2d":[0.5,0.5,1,1],"depth":0.8}').replace("[0,0,1,1]", "[0,0,0.5,0.5]")
    assert score_predictions(recs[:1], [wrong_last], root).items[0].grounding_hit is False


def test_no_area_no_gt_no_depth_map(ds):
    root, recs = ds
    s = score_predictions(recs[:1], ["<answer>red cube</answer>"], root)
    assert s.items[0].grounding_iou == 0 and s.items[0].depth_consistency == 0 and s.items[0].n_boxes == 0
    bare = {k: v for k, v in recs[0].items() if k not in ("depth_map", "normalized_solution_round")}
    s = score_predictions([bare], [trace(LEFT_TOP)], root)
    assert s.items[0].grounding_iou is None and s.items[0].depth_consistency is None
    assert s.metrics["n_grounding"] == 0 and s.metrics["n_depth"] == 0 and s.metrics["grounding_acc50"] == 0


def test_depth_consistency_fraction(ds):
    root, recs = ds
    # full image true mean 0.5: stated 0.5 ok; last box true 0.2: stated 0.3 is 50% off
    s = score_predictions(recs[:1], [trace('{"bbox_2d":[0,0,0.5,0.5],"depth":0.3}')], root)
    assert s.items[0].depth_consistency == 0.5
    # within 10% (0.21 vs 0.2) passes; the wrong full-image depth fails
    s = score_predictions(recs[:1], [trace('{"bbox_2d":[0,0,0.5,0.5],"depth":0.21}', full_depth="0.9")], root)
    assert s.items[0].depth_consistency == 0.5


def test_depth_consistency_edge_cases():
    dm = np.zeros((10, 10), dtype=np.float32)
    assert depth_consistency([Box(0, 0, 1, 1, 0.0)], dm) == 1.0  # nearest surface, D = 0
    assert depth_consistency([Box(0.6, 0, 0.4, 1, 0.0)], dm) == 0.0  # inverted box: inconsistent
    assert depth_consistency([Box(1.2, 0, 1.5, 1, 0.0)], dm) == 0.0  # off-image
    assert depth_consistency([], dm) == 0.0


def test_length_mismatch_raises(ds):
    root, recs = ds
    with pytest.raises(ValueError, match="4 records but 3 predictions"):
        score_predictions(recs, ["x"] * 3, root)


# ---- the evaluate stage (sif-bench through the benchmark runner) ---------------------------------


def _cfg(tmp_path, **eval_kw) -> RunConfig:
    cfg = RunConfig(work_dir=str(tmp_path / "work"))
    cfg.registry.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.registry.artifact_root = str(tmp_path / "mlartifacts")
    cfg.depth.provider = "fake-gradient"  # sif-bench items bring their own depth images; never load weights
    for k, v in {"batch_size": 3, "num_render": 3, **eval_kw}.items():
        setattr(cfg.eval, k, v)
    return cfg


def _img_sources(html: str) -> list[str]:
    return re.findall(r"<img [^>]*src='([^']*)'", html)


def _png_bytes(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:60]
    return base64.b64decode(uri[len(prefix):], validate=True)


def test_evaluate_with_fake_oracle_writes_everything(ds, tmp_path):
    root, recs = ds
    res = evaluate(_cfg(tmp_path), None, root, tmp_path / "out", generate_fn=FakeOracleGenerator(), track=False)
    assert res.run_id is None  # track=False: no MLflow run
    assert res.metrics["accuracy"] == 1 and res.metrics["format_validity"] == 1
    assert res.metrics["sif-bench/accuracy"] == 1 and res.metrics["sif-bench/category/depth"] == 1
    assert res.headline() == "validity 1.000, accuracy 1.000, grounding Acc@0.5 1.000, depth 1.000 (4 items)"
    rows = [json.loads(line) for line in res.predictions_path.read_text().splitlines()]
    assert res.predictions_path == tmp_path / "out/sif-bench/predictions.jsonl"
    assert [r["id"] for r in rows] == ["t-0", "t-1", "t-2", "t-3"]
    assert rows[0]["response"] == recs[0]["messages"][1]["content"]
    assert json.loads((tmp_path / "out/metrics.json").read_text()) == res.metrics
    bench_metrics = json.loads((tmp_path / "out/sif-bench/metrics.json").read_text())
    assert bench_metrics["scoring"] == "strict" and bench_metrics["overall"] == 1
    assert len(res.renders) == 3 and all(p.is_file() for p in res.renders)
    cats = [next(r["category"] for r in recs if r["id"] in p.name) for p in res.renders]
    assert cats[:2] == ["depth", "counting"]  # round-robin over categories
    html = res.report_html.read_text()
    assert "category/counting" in html and "href='sif-bench/report.html'" in html
    # Self-contained: the chart and all 3 renders are embedded, and the files stay on disk too.
    uris = _img_sources(html)
    assert len(uris) == 4 and [_png_bytes(u) for u in uris] == [p.read_bytes() for p in [res.chart, *res.renders]]


def test_evaluate_with_corrupted_fake_and_batches(ds, tmp_path):
    root, _ = ds
    seen = []

    class CountingFake(FakeOracleGenerator):
        def __call__(self, requests):
            seen.append(len(requests))
            return super().__call__(requests)

    res = evaluate(_cfg(tmp_path, num_render=0), None, root, tmp_path / "out",
                   generate_fn=CountingFake("no_answer", every=2), track=False)
    assert seen == [3, 1]
    assert res.metrics["accuracy"] == 0.5 and res.metrics["format_validity"] == 0.5 and res.renders == []
    assert res.metrics["format_failures"] == 2
    res = evaluate(_cfg(tmp_path), None, root, tmp_path / "out2", generate_fn=FakeOracleGenerator("miss_boxes"),
                   track=False)
    assert res.metrics["grounding_acc50"] == 0 and res.metrics["accuracy"] == 1 and res.metrics["format_validity"] == 1


def test_generator_returning_wrong_count_fails(ds, tmp_path):
    root, _ = ds
    with pytest.raises(RuntimeError, match="returned 0 texts for a batch of 3"):
        evaluate(_cfg(tmp_path), None, root, tmp_path / "out", generate_fn=lambda requests: [], track=False)
    with pytest.raises(ValueError, match="model_dir is required"):
        evaluate(_cfg(tmp_path), None, root, tmp_path / "out", track=False)


def test_evaluate_refuses_a_benchmark_without_data(ds, tmp_path):
    from sifthinker.config.run_config import BenchmarkRef

    root, _ = ds
    cfg = _cfg(tmp_path)
    cfg.eval.benchmarks = [BenchmarkRef("sif-bench"), BenchmarkRef("spatialbench")]
    with pytest.raises(ValueError, match="spatialbench needs `data`"):
        evaluate(cfg, None, root, tmp_path / "out", generate_fn=FakeOracleGenerator(), track=False)
    cfg.eval.benchmarks = [BenchmarkRef("sif-bench"), BenchmarkRef("sif-bench", limit=1)]
    with pytest.raises(ValueError, match="lists sif-bench more than once"):
        evaluate(cfg, None, root, tmp_path / "out", generate_fn=FakeOracleGenerator(), track=False)


def test_evaluate_logs_to_mlflow(ds, tmp_path):
    import mlflow

    root, _ = ds
    res = evaluate(_cfg(tmp_path), "models/fake", root, tmp_path / "out", generate_fn=FakeOracleGenerator())
    run = mlflow.get_run(res.run_id)
    assert run.data.metrics["sif-bench/accuracy"] == 1 and run.data.metrics["sif-bench/category/depth"] == 1
    assert run.data.metrics["sif-bench/format_failures"] == 0
    assert all(k.startswith("sif-bench/") for k in run.data.metrics), "each metric once, one naming scheme"
    assert run.data.tags["sifthinker.stage"] == "evaluate" and run.data.params["generator"] == "fake-oracle"
    assert run.info.run_name == "evaluate:sif-bench"
    # the run is open around the work: the predictions were written between its start and end
    written = int((tmp_path / "out/sif-bench/predictions.jsonl").stat().st_mtime * 1000)
    assert run.info.start_time <= written <= run.info.end_time
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(res.run_id)} == {"metrics.json", "report.html", "sif-bench"}
    names = {a.path for a in client.list_artifacts(res.run_id, "sif-bench")}
    assert names == {f"sif-bench/{n}" for n in ("metrics.json", "predictions.jsonl", "items.jsonl", "report.html",
                                                "chart.png", "renders")}


def test_model_generator_wiring_with_fake_model_modules(ds, tmp_path, monkeypatch):
    """The real path's plumbing, with fake `sifthinker.model` modules standing in for the model."""
    root, recs = ds
    calls = {}

    class GenRequest:
        def __init__(self, image, depth_image, question, more_images=(), more_depth_images=()):
            self.image, self.depth_image, self.question = image, depth_image, question
            self.more = (more_images, more_depth_images)

    def load_model(path, cfg):
        calls.setdefault("loads", []).append(Path(path))
        return "MODEL", "PROC"

    def generate(model, processor, requests, max_new_tokens, temperature=0.0, batch_size=1):
        calls["gen"] = (model, processor, max_new_tokens, temperature, batch_size)
        assert all(r.image.size == (W, H) and r.depth_image.getpixel((0, 0)) == (200, 40, 40) for r in requests)
        assert all(r.more == ((), ()) for r in requests)
        return [("<answer>red cube</answer>" if r.question.startswith("Which") else "<answer>2</answer>")
                for r in requests]

    pkg = types.ModuleType("sifthinker.model")
    pkg.load_model = load_model
    inf = types.ModuleType("sifthinker.model.inference")
    inf.GenRequest, inf.generate = GenRequest, generate
    pkg.inference = inf
    monkeypatch.setitem(sys.modules, "sifthinker.model", pkg)
    monkeypatch.setitem(sys.modules, "sifthinker.model.inference", inf)

    cfg = _cfg(tmp_path, max_new_tokens=77, num_render=1)
    (tmp_path / "model").mkdir()
    res = evaluate(cfg, tmp_path / "model", root, tmp_path / "out", track=False)
    assert calls["loads"] == [tmp_path / "model"]  # loaded once for two batches
    assert calls["gen"] == ("MODEL", "PROC", 77, 0.0, 3)
    assert res.metrics["accuracy"] == 1 and res.metrics["format_validity"] == 0


def test_evaluate_with_the_real_tiny_model(ds, tmp_path, tiny_model_dir):
    """The default (non-fake) path end to end: load_model + greedy generate on a tiny random model."""
    from sifthinker.method.trace import validate
    from sifthinker.model import load_model
    from sifthinker.model.inference import GenRequest, generate

    root, records = ds
    cfg = RunConfig.load(Path(__file__).resolve().parents[2] / "recipes" / "local.yaml")
    cfg.work_dir = str(tmp_path / "work")
    cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.eval.num_render = 8, 2, 1
    res = evaluate(cfg, tiny_model_dir, root, tmp_path / "out", track=False, limit=2)
    rows = [json.loads(line) for line in res.predictions_path.read_text().splitlines()]
    # the predictions are the model's greedy completions on the record's own RGB and depth images
    model, processor = load_model(tiny_model_dir, cfg)
    reqs = [GenRequest(Image.open(root / r["image"]).convert("RGB"), Image.open(root / r["depth_image"]).convert("RGB"),
                       r["problem"]) for r in records[:2]]
    assert [r["response"] for r in rows] == generate(model, processor, reqs, max_new_tokens=8)
    assert all(r["response"] for r in rows)
    assert res.metrics["n"] == 2
    assert res.metrics["format_validity"] == sum(not validate(r["response"]) for r in rows) / 2
    # one render per benchmark of the recipe (SIF-Bench and the V* fixture), each within its limit of 2
    assert [p.parent.parent.name for p in res.renders] == ["sif-bench", "vstar"] and res.report_html.is_file()
    assert res.metrics["vstar/n"] == 2


def test_benchmark_report_is_self_contained_and_escapes_model_text(tmp_path):
    from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring
    from sifthinker.evaluation.report import ReportData, category_chart, write_benchmark_report

    items = [Item(id=f"i{k}", benchmark="x", category="c", question="q?", images=["a.png"]) for k in range(2)]
    score = BenchmarkScore("x", Scoring.ORIGINAL, {"overall": 0.5, "n": 2, "format_failures": 1, "category/c": 0.5},
                           [ItemResult("i0", "c", True, False), ItemResult("i1", "c", False, True)],
                           notes=["a <note>"])
    chart = category_chart(score, tmp_path / "out" / "chart.png")
    render = tmp_path / "out" / "renders" / "0.png"
    render.parent.mkdir(parents=True)
    Image.new("RGB", (8, 6), (0, 0, 255)).save(render)
    data = ReportData("x", score, items, {"i0": "<answer>yes</answer>", "i1": "<script>alert(1)</script>"},
                      chart, [(render, "i0 <b>")])
    # The report in another folder than its images: relative links would break, data URIs cannot.
    html = write_benchmark_report(tmp_path / "elsewhere" / "report.html", data).read_text()
    assert [_png_bytes(u) for u in _img_sources(html)] == [chart.read_bytes(), render.read_bytes()]
    assert "renders/" not in html and "chart.png" not in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a &lt;note&gt;" in html
    assert "class='scoring'>original<" in html and "class='format-failures'>1<" in html
    not_png = tmp_path / "x.png"
    not_png.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="not a PNG"):
        write_benchmark_report(tmp_path / "r.html", ReportData("x", score, items, {}, not_png))
