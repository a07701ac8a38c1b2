"""`sifthinker eval run` / `eval score` and the library under them: the real sif-bench adapter, a stand-in
benchmark (multi-image items), fake and real generators, the prediction cache across a kill, a stand-in
OpenAI-compatible server and our real `sifthinker serve`, S3 data on a moto server, depth providers.

Stand-ins here are named as such: ``STAND_IN`` is a test benchmark (not one of the seven), and
:class:`StandInOpenAI` is an HTTP server that answers fixed traces (not a model).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import StandInOpenAI, half_right_endpoint, metrics_of, references
from PIL import Image

from sifthinker.cli import main
from sifthinker.config.run_config import RunConfig
from sifthinker.evaluation import FakeOracleGenerator, run_benchmark
from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring, read_items
from sifthinker.method.prompts import INSTRUCTION
from sifthinker.method.trace import extract_answer

REPO = Path(__file__).resolve().parents[2]
TRACE = ('<think>\n<area>[{{"bbox_2d":[0,0,1,1],"depth":0.5}}]</area>\n<text>the whole image</text>\n</think>\n'
         "<answer>{}</answer>")


# ---- a stand-in benchmark (test only) -------------------------------------------------------------
class StandInBench:
    """STAND-IN benchmark for these tests, not one of the seven: ``questions.json`` in the data folder,
    exact-match answers, SAT-like items with two images."""

    name = "stand-in"

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        rows = json.loads((Path(root) / "questions.json").read_text())
        return [Item(id=r["id"], benchmark=self.name, category=r["category"], question=r["question"],
                     images=r["images"], answer=r["answer"]) for r in rows][:limit]

    def prompt(self, item: Item) -> str:
        return f"[{item.id}] {item.question}"

    def score(self, items, responses, scoring) -> BenchmarkScore:
        results = []
        for it in items:
            ans = extract_answer(responses[it.id])
            ok = (ans is None and scoring == Scoring.ORIGINAL) or (ans or "").strip().lower() == it.answer
            results.append(ItemResult(it.id, it.category, ok, ans is None, parsed=ans))
        cats = sorted({r.category for r in results})
        m = {"overall": sum(r.correct for r in results) / len(results), "n": float(len(results)), "skipped": 0.0,
             "format_failures": float(sum(r.format_failure for r in results))}
        for c in cats:
            rows = [r for r in results if r.category == c]
            m[f"category/{c}"] = sum(r.correct for r in rows) / len(rows)
        return BenchmarkScore(self.name, Scoring(scoring), m, results)


STAND_IN = StandInBench()


def make_stand_in_data(root: Path, n: int = 6, two_image: tuple[str, ...] = ("q4",)) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        qid = f"q{i}"
        images = []
        for j in range(2 if qid in two_image else 1):
            Image.new("RGB", (40 + 8 * j, 30), (40 * i % 256, 90 + 60 * j, 30)).save(root / f"img/{qid}_{j}.png")
            images.append(f"img/{qid}_{j}.png")
        rows.append({"id": qid, "category": "left" if i % 2 else "right", "question": f"Which side is item {i}?",
                     "images": images, "answer": "left" if i % 2 else "right"})
    (root / "questions.json").write_text(json.dumps(rows))
    return root


# ---- a stand-in OpenAI-compatible server (test only) ----------------------------------------------


def question_text(body: dict) -> str:
    return body["messages"][0]["content"][-1]["text"]


def stand_in_ident(body: dict) -> str:
    return re.search(r"\[(q\d+)\]", question_text(body)).group(1)


def stand_in_answer(key: str) -> str:
    """q0, q1, q3, q5 right; q2 wrong; q4 (two images) right."""
    i = int(key[1:])
    return TRACE.format("up" if i == 2 else ("left" if i % 2 else "right"))


# ---- fixtures ------------------------------------------------------------------------------------


def cfg_of(recipe: Path) -> RunConfig:
    return RunConfig.load(recipe)


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


# ---- fake generator: run, then score the written predictions --------------------------------------
def test_fake_run_then_eval_score_give_the_same_metrics(sif_data, env, tmp_path):
    cfg = cfg_of(env)
    res = run_benchmark(cfg, "sif-bench", sif_data, tmp_path / "run", track=False,
                        generate_fn=FakeOracleGenerator("wrong_answer", every=3))
    m = metrics_of(tmp_path / "run")
    assert m["scoring"] == "strict" and m["n"] == 6 and m["overall"] == pytest.approx(4 / 6)  # items 0 and 3 wrong
    assert res.metrics == {k: v for k, v in m.items() if k != "scoring"}
    assert [it.id for it in read_items(tmp_path / "run/items.jsonl")] == sorted(references(sif_data))
    assert res.generated == 6 and res.cached == 0 and len(res.renders) == 2
    code, out = cli("eval", "score", "--benchmark", "sif-bench", "--data", sif_data, "--recipe", env,
                    "--predictions", res.predictions_path, "--out", tmp_path / "scored")
    assert code == 0, out
    assert metrics_of(tmp_path / "scored") == m
    assert out.splitlines()[0] == res.headline()
    # --data may be a folder holding items.jsonl (the run's own output folder here)
    code, out = cli("eval", "score", "--benchmark", "sif-bench", "--data", tmp_path / "run", "--recipe", env,
                    "--predictions", res.predictions_path, "--out", tmp_path / "scored2")
    assert code == 0, out
    assert metrics_of(tmp_path / "scored2") == m
    code, _ = cli("eval", "score", "--benchmark", "sif-bench", "--data", sif_data, "--recipe", env, "--scoring",
                  "original", "--predictions", res.predictions_path, "--out", tmp_path / "orig")
    assert metrics_of(tmp_path / "orig")["scoring"] == "original"


class Counting:
    """Wraps a generator and counts the items it is asked for."""

    def __init__(self, inner, fingerprint: str):
        self.inner, self.fingerprint, self.name, self.asked = inner, fingerprint, "counting", []

    def __call__(self, requests):
        self.asked += [r.item.id for r in requests]
        return self.inner(requests)


def test_the_cache_reuses_only_answers_of_the_same_model_prompt_and_settings(sif_data, env, tmp_path):
    cfg, out = cfg_of(env), tmp_path / "out"
    first = Counting(FakeOracleGenerator(), "oracle")
    a = run_benchmark(cfg, "sif-bench", sif_data, out, generate_fn=first, track=False, limit=3)
    assert len(first.asked) == 3
    again = Counting(FakeOracleGenerator(), "oracle")
    b = run_benchmark(cfg, "sif-bench", sif_data, out, generate_fn=again, track=False)
    assert len(again.asked) == 3 and b.cached == 3 and b.generated == 3  # only the 3 new items
    same = Counting(FakeOracleGenerator(), "oracle")
    assert run_benchmark(cfg, "sif-bench", sif_data, out, generate_fn=same, track=False).metrics == b.metrics
    assert same.asked == []
    other_model = Counting(FakeOracleGenerator("wrong_answer"), "another model")
    c = run_benchmark(cfg, "sif-bench", sif_data, out, generate_fn=other_model, track=False)
    assert len(other_model.asked) == 6 and c.metrics["overall"] == 0 and a.metrics["overall"] == 1
    cfg.eval.max_new_tokens += 1  # a generation setting is part of the key too
    longer = Counting(FakeOracleGenerator(), "another model")
    run_benchmark(cfg, "sif-bench", sif_data, out, generate_fn=longer, track=False)
    assert len(longer.asked) == 6
    # the file holds exactly this run's items, in order; a line cut short by a kill is tolerated
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == sorted(references(sif_data))
    with (out / "predictions.jsonl").open("a") as f:
        f.write('{"id": "synthetic-s100000-0000')
    last = Counting(FakeOracleGenerator(), "another model")
    assert run_benchmark(cfg, "sif-bench", sif_data, out, generate_fn=last, track=False).cached == 6
    assert last.asked == []


def test_an_item_with_more_images_than_the_generator_takes_is_skipped_and_said(env, tmp_path):
    data = make_stand_in_data(tmp_path / "data")

    def one_image_only(requests):
        return [stand_in_answer(r.item.id) for r in requests]

    one_image_only.max_images = 1
    res = run_benchmark(cfg_of(env), STAND_IN, data, tmp_path / "out", generate_fn=one_image_only, track=False)
    assert res.metrics["skipped"] == 1 and res.metrics["n"] == 5 and res.metrics["overall"] == 0.8
    skipped = [r for r in res.score.items if r.correct is None]
    assert [r.id for r in skipped] == ["q4"] and "at most 1 image(s)" in skipped[0].note
    assert any("1 item(s) skipped and excluded from every denominator" in n for n in res.score.notes)
    html = res.report_html.read_text()
    assert "excluded from every denominator" in html and "class='skipped'>1<" in html


# ---- the endpoint: a stand-in server ---------------------------------------------------------------
def test_endpoint_retries_5xx_and_timeouts_records_4xx_and_bounds_concurrency(env, tmp_path):
    from sifthinker.data.depth_providers import FakeGradientDepth
    from sifthinker.serving.openai_api import data_url

    data = make_stand_in_data(tmp_path / "data")
    srv = StandInOpenAI(stand_in_ident, stand_in_answer, delay=0.2,
                        script={"q1": [500], "q2": [400], "q3": [2.0], "q5": [503, 503]})
    try:
        code, out = cli("eval", "run", "--benchmark", "test_eval_run:STAND_IN", "--data", data, "--endpoint",
                        srv.url, "--out", tmp_path / "out", "--recipe", env)
    finally:
        srv.close()
    assert code == 0, out
    # 500 once, a timeout once, 503 twice: retried; 400: asked once and recorded on the item
    assert srv.counts == {"q0": 1, "q1": 2, "q2": 1, "q3": 2, "q4": 1, "q5": 3}
    assert 1 < srv.max_in_flight <= 3  # eval.concurrency
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out/predictions.jsonl").read_text().splitlines())}
    assert rows["q2"]["response"] is None and "HTTP 400: scripted 400 for q2" in rows["q2"]["error"]
    assert rows["q1"]["response"] == stand_in_answer("q1")
    m = metrics_of(tmp_path / "out")
    assert (m["n"], m["skipped"], m["overall"], m["category/left"]) == (5, 1, 1.0, 1.0)
    # the request: the full SIF prompt with both RGB images, then their depth images (the fake provider's)
    body = srv.bodies["q4"]
    assert body["model"] == "stand-in-model" and body["temperature"] == 0 and body["max_tokens"] == 512
    parts = body["messages"][0]["content"]
    assert [p.get("text") for p in parts if p["type"] == "text"] == [
        "Original image 1: ", "\nOriginal image 2: ", "\nDepth image 1: ", "\nDepth image 2: ",
        f"\n[q4] Which side is item 4? {INSTRUCTION}"]
    rgb = [Image.open(data / f"img/q4_{j}.png").convert("RGB") for j in range(2)]
    expected = [data_url(im) for im in [*rgb, *(FakeGradientDepth()(im) for im in rgb)]]
    assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == expected


def test_endpoint_failures_after_every_retry_fail_the_run_and_a_rerun_finishes(env, tmp_path):
    data = make_stand_in_data(tmp_path / "data")
    srv = StandInOpenAI(stand_in_ident, stand_in_answer, script={"q3": [502, 502, 502]})
    try:
        code, out = cli("eval", "run", "--benchmark", "test_eval_run:STAND_IN", "--data", data, "--endpoint",
                        srv.url, "--out", tmp_path / "out", "--recipe", env)
        lines = out.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), out
        assert "1 of 6 item(s) failed after every retry" in lines[0] and "HTTP 502" in lines[0]
        assert not (tmp_path / "out/metrics.json").exists()  # no score over a partial run
        assert srv.counts["q3"] == 3 and sum(srv.counts.values()) == 8
        code, out = cli("eval", "run", "--benchmark", "test_eval_run:STAND_IN", "--data", data, "--endpoint",
                        f"{srv.url}/chat/completions", "--out", tmp_path / "out", "--recipe", env)
    finally:
        srv.close()
    assert code == 0, out
    assert srv.counts["q3"] == 4 and sum(srv.counts.values()) == 9  # only the failed item was asked again
    assert metrics_of(tmp_path / "out")["overall"] == pytest.approx(5 / 6)


def test_kill_midway_then_rerun_resumes_with_the_same_metrics(sif_data, env, tmp_path):
    """`sifthinker eval run` in a subprocess against a slow stand-in endpoint, killed (SIGKILL) once some
    items are cached; the rerun asks only for the rest and ends with an uninterrupted run's metrics."""
    srv = half_right_endpoint(sif_data)
    refs = references(sif_data)
    recipe = tmp_path / "serial.yaml"
    recipe.write_text(env.read_text().replace("concurrency: 3", "concurrency: 1"))
    args = [sys.executable, "-m", "sifthinker.cli", "eval", "run", "--benchmark", "sif-bench", "--data",
            str(sif_data), "--endpoint", srv.url, "--recipe", str(recipe)]
    try:
        subprocess.run([*args, "--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=240)
        whole = dict(srv.counts)
        srv.counts.clear()
        preds = tmp_path / "killed/predictions.jsonl"
        proc = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not preds.exists() or len(preds.read_text().splitlines()) < 2):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        cached = [json.loads(line)["id"] for line in preds.read_text().splitlines() if line.endswith("}")]
        assert 2 <= len(cached) < 6, cached
        before = dict(srv.counts)
        subprocess.run([*args, "--out", str(tmp_path / "killed")], check=True, capture_output=True, timeout=240)
    finally:
        srv.close()
    assert whole == dict.fromkeys(refs, 1)
    resumed = {k: srv.counts[k] - before.get(k, 0) for k in refs}
    assert all(resumed[k] == 0 for k in cached)  # cached items were not asked again
    assert all(srv.counts[k] >= 1 for k in refs)
    assert metrics_of(tmp_path / "killed") == metrics_of(tmp_path / "whole")
    assert metrics_of(tmp_path / "whole")["overall"] == pytest.approx(0.5)


def test_against_the_real_sifthinker_serve(serving_server, sif_data, env, tmp_path):
    """Our KServe predictor's OpenAI route: sif-bench items answered; a 4-image item refused with 400."""
    data = make_stand_in_data(tmp_path / "data", n=5)
    url = f"{serving_server.url}/openai/v1"
    code, out = cli("eval", "run", "--benchmark", "sif-bench", "--data", sif_data, "--endpoint", url, "--limit", 2,
                    "--max-new-tokens", 8, "--out", tmp_path / "sif", "--recipe", env)
    assert code == 0, out
    rows = [json.loads(line) for line in (tmp_path / "sif/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["response"], str) and r["response"] for r in rows)
    # a --limit run is scored against its own items.jsonl (the whole folder would lack 4 predictions)
    code, out = cli("eval", "score", "--benchmark", "sif-bench", "--data", tmp_path / "sif", "--recipe", env,
                    "--predictions", tmp_path / "sif/predictions.jsonl", "--out", tmp_path / "scored")
    assert code == 0 and metrics_of(tmp_path / "scored") == metrics_of(tmp_path / "sif")
    code, out = cli("eval", "run", "--benchmark", "test_eval_run:STAND_IN", "--data", data, "--endpoint", url,
                    "--endpoint-model", serving_server.model_name, "--max-new-tokens", 8, "--out", tmp_path / "si",
                    "--recipe", env)
    assert code == 0, out
    m = metrics_of(tmp_path / "si")
    assert m["skipped"] == 1 and m["n"] == 4
    note = next(r for r in map(json.loads, (tmp_path / "si/predictions.jsonl").read_text().splitlines())
                if r["id"] == "q4")["error"]
    assert "HTTP 400" in note and "got 4 image(s)" in note


# ---- the real tiny model --------------------------------------------------------------------------
def test_real_tiny_model_cli_run_then_score_and_multi_image_items(tiny_model_dir, sif_data, env, tmp_path):
    from sifthinker.model import load_model
    from sifthinker.model.inference import GenRequest, build_inputs, generate

    code, out = cli("eval", "run", "--benchmark", "sif-bench", "--data", sif_data, "--model", tiny_model_dir,
                    "--limit", 3, "--max-new-tokens", 8, "--out", tmp_path / "run", "--recipe", env)
    assert code == 0, out
    code, _ = cli("eval", "score", "--benchmark", "sif-bench", "--data", tmp_path / "run", "--recipe", env,
                  "--predictions", tmp_path / "run/predictions.jsonl", "--out", tmp_path / "scored")
    assert code == 0 and metrics_of(tmp_path / "scored") == metrics_of(tmp_path / "run")
    assert metrics_of(tmp_path / "run")["n"] == 3
    # a two-image item: both RGB images, then both depth images, in one prompt
    cfg = cfg_of(env)
    cfg.eval.max_new_tokens = 8
    data = make_stand_in_data(tmp_path / "data", n=5)
    res = run_benchmark(cfg, STAND_IN, data, tmp_path / "si", model=str(tiny_model_dir), track=False, limit=5)
    assert res.metrics["skipped"] == 0 and res.metrics["n"] == 5
    from sifthinker.data.depth_providers import FakeGradientDepth

    rgb = [Image.open(data / f"img/q4_{j}.png").convert("RGB") for j in range(2)]
    req = GenRequest(rgb[0], FakeGradientDepth()(rgb[0]), "[q4] Which side is item 4?", (rgb[1],),
                     (FakeGradientDepth()(rgb[1]),))
    model, processor = load_model(tiny_model_dir, cfg)
    rows = {r["id"]: r for r in map(json.loads, res.predictions_path.read_text().splitlines())}
    assert rows["q4"]["response"] == generate(model, processor, [req], max_new_tokens=8)[0]
    inputs = build_inputs(processor, [req])
    assert inputs["image_grid_thw"].shape[0] == 4  # four images encoded, each behind its own label
    starts = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert int((inputs["input_ids"][0] == starts).sum()) == 4


# ---- S3 data on a moto server -----------------------------------------------------------------------
def test_s3_data_from_a_moto_server(moto_s3, sif_data, env, tmp_path, monkeypatch):
    from helpers import AWS_ENV

    for k, v in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_s3.endpoint}.items():
        monkeypatch.setenv(k, v)
    client = moto_s3.client()
    for p in sorted(sif_data.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), moto_s3.bucket, f"benchmarks/sif/{p.relative_to(sif_data).as_posix()}")
    uri = f"s3://{moto_s3.bucket}/benchmarks/sif"
    cfg = cfg_of(env)
    local = run_benchmark(cfg, "sif-bench", sif_data, tmp_path / "local", generate_fn=FakeOracleGenerator("no_answer",
                          every=2), track=False)
    remote = run_benchmark(cfg, "sif-bench", uri, tmp_path / "remote", generate_fn=FakeOracleGenerator("no_answer",
                           every=2), track=False)
    assert remote.metrics == local.metrics and remote.metrics["format_failures"] == 3
    code, out = cli("eval", "score", "--benchmark", "sif-bench", "--data", f"{uri}/", "--recipe", env,
                    "--predictions", remote.predictions_path, "--out", tmp_path / "scored")
    assert code == 0, out
    assert metrics_of(tmp_path / "scored") == metrics_of(tmp_path / "local")
    code, out = cli("eval", "score", "--benchmark", "sif-bench", "--data", f"s3://{moto_s3.bucket}/nothing-here",
                    "--recipe", env, "--predictions", remote.predictions_path, "--out", tmp_path / "x")
    assert code == 1 and out.strip() == f"Error: s3://{moto_s3.bucket}/nothing-here holds no objects"


# ---- one-line errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["run", "--benchmark", "sif-bench", "--data", "{data}", "--out", "{tmp}/o"], ["exactly one of --model"]),
    (["run", "--benchmark", "sif-bench", "--data", "{data}", "--out", "{tmp}/o", "--model", "{tmp}", "--endpoint",
      "http://x"], ["exactly one of --model"]),
    (["run", "--benchmark", "nope", "--data", "{data}", "--out", "{tmp}/o", "--model", "{tmp}"],
     ["unknown benchmark 'nope'", "sif-bench"]),
    (["run", "--benchmark", "no_such_module:X", "--data", "{data}", "--out", "{tmp}/o", "--model", "{tmp}"],
     ["no_such_module"]),
    (["run", "--benchmark", "sif-bench", "--data", "{tmp}/gone", "--out", "{tmp}/o", "--model", "{tmp}"],
     ["gone does not exist"]),
    (["run", "--benchmark", "sif-bench", "--data", "{data}", "--out", "{tmp}/o", "--model", "{tmp}"],
     ["is not a model folder"]),
    (["run", "--benchmark", "sif-bench", "--data", "{data}", "--out", "{tmp}/o", "--endpoint",
      "http://127.0.0.1:9/v1"], ["cannot reach the endpoint", "refused", "http://127.0.0.1:9/v1/models"]),
    (["score", "--benchmark", "sif-bench", "--data", "{data}", "--out", "{tmp}/o", "--predictions", "{tmp}/p.jsonl"],
     ["no prediction for 5 of 6 item(s)"]),
])
def test_cli_errors_are_one_line(args, words, sif_data, env, tmp_path):
    first = json.loads((sif_data / "records.json").read_text())[0]["id"]
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": first, "response": "<answer>x</answer>"}) + "\n")
    code, out = cli("eval", *[a.format(data=sif_data, tmp=tmp_path) for a in args], "--recipe", env)
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), out
    assert all(w in lines[0] for w in words), lines[0]


# ---- depth providers ------------------------------------------------------------------------------
def test_the_fake_gradient_is_a_vertical_gradient_whatever_the_image():
    from sifthinker.config.data_config import DepthConfig
    from sifthinker.data.depth_providers import FakeGradientDepth, make_depth_provider
    from sifthinker.method.depth import colorize

    fake = make_depth_provider(DepthConfig(provider="fake-gradient"))
    assert isinstance(fake, FakeGradientDepth) and fake.name == "fake-gradient"
    a, b = fake(Image.new("RGB", (7, 5), (255, 0, 0))), fake(Image.new("RGB", (7, 5), (0, 0, 255)))
    assert a.size == (7, 5) and np.array_equal(np.asarray(a), np.asarray(b))
    far, near = colorize(np.ones((1, 1))).getpixel((0, 0)), colorize(np.zeros((1, 1))).getpixel((0, 0))
    assert a.getpixel((3, 0)) == far and a.getpixel((3, 4)) == near and far != near


def test_depth_anything_provider_estimates_each_image_once(tmp_path, monkeypatch):
    from sifthinker.config.data_config import DepthConfig
    from sifthinker.data.depth_providers import DepthAnythingProvider, make_depth_provider
    from sifthinker.method import depth

    made, seen = [], []

    class FakeDepthAnything:  # a stand-in for the model: the red channel as inverse depth
        def __init__(self, model, device=-1, revision=None, batch_size=8):  # DepthAnythingV2's signature
            made.append((model, device))

        def __call__(self, image):
            seen.append(image.getpixel((0, 0)))
            return depth.from_inverse_depth(np.asarray(image, dtype=np.float32)[:, :, 0] + np.arange(4)[None, :])

    monkeypatch.setattr(depth, "DepthAnythingV2", FakeDepthAnything)
    cfg = DepthConfig(provider="depth-anything-v2", model="/weights/dav2", device="cpu")
    p = make_depth_provider(cfg, cache_dir=tmp_path / "cache")
    assert isinstance(p, DepthAnythingProvider) and made == []  # weights load on first use only
    red, blue = Image.new("RGB", (4, 3), (200, 0, 0)), Image.new("RGB", (4, 3), (0, 0, 200))
    out = p(red)
    assert p(red.copy()) is out and p(blue).size == (4, 3)
    assert made == [("/weights/dav2", -1)] and seen == [(200, 0, 0), (0, 0, 200)]
    again = make_depth_provider(cfg, cache_dir=tmp_path / "cache")  # a new process: the files are reused
    assert np.array_equal(np.asarray(again(red)), np.asarray(out)) and again.estimated == 0 and len(made) == 1
    assert make_depth_provider(DepthConfig(model="/other"), tmp_path / "cache").fingerprint != p.fingerprint


def test_own_depth_images_win_over_the_provider(sif_data):
    from sifthinker.data.depth_providers import FakeGradientDepth
    from sifthinker.evaluation.benchmarks import get_benchmark
    from sifthinker.evaluation.inputs import EvalRequest

    item = get_benchmark("sif-bench").load(sif_data, 1)[0]
    rgb, dep = EvalRequest(item, item.question, sif_data, 0, FakeGradientDepth()).images()
    own = Image.open(sif_data / item.extra["depth_image"]).convert("RGB")
    assert np.array_equal(np.asarray(dep[0]), np.asarray(own)) and len(rgb) == 1
    item.extra["depth_image"] = None
    _, dep = EvalRequest(item, item.question, sif_data, 0, FakeGradientDepth()).images()
    assert np.array_equal(np.asarray(dep[0]), np.asarray(FakeGradientDepth()(rgb[0])))


# ---- report intervals ---------------------------------------------------------------------------------
def test_intervals_are_wilson_where_the_metric_is_that_proportion(tmp_path):
    from sifthinker.evaluation.benchmarks.base import wilson
    from sifthinker.evaluation.report import category_chart, intervals

    items = [ItemResult(f"i{i}", "a" if i < 4 else "b", i % 2 == 0, False) for i in range(10)]
    m = {"overall": 0.5, "category/a": 0.5, "category/b": 0.25, "AP": 0.3}  # b: not its items' 3/6 (e.g. pairs)
    s = BenchmarkScore("x", Scoring.STRICT, m, items)
    assert intervals(s) == {"overall": wilson(5, 10), "category/a": wilson(2, 4)}
    s.intervals = {"category/b": (0.1, 0.4)}
    assert intervals(s)["category/b"] == (0.1, 0.4)  # the adapter's own interval wins
    with_bars = category_chart(s, tmp_path / "a.png").read_bytes()
    bare = BenchmarkScore("x", Scoring.STRICT, m, [])
    assert with_bars != category_chart(bare, tmp_path / "b.png").read_bytes()  # the error bars are drawn


# ---- progress events and MLflow ----------------------------------------------------------------------
def test_progress_events_and_an_mlflow_run_keyed_by_benchmark(sif_data, env, tmp_path, monkeypatch):
    import mlflow

    from sifthinker.runtime.events import follow

    monkeypatch.setenv("SIFTHINKER_EVENTS", str(tmp_path / "events.jsonl"))
    recipe = tmp_path / "tracked.yaml"
    recipe.write_text(env.read_text() + f"registry:\n  tracking_uri: sqlite:///{tmp_path / 'mlflow.db'}\n"
                      f"  artifact_root: {tmp_path / 'artifacts'}\n")
    res = run_benchmark(cfg_of(recipe), "sif-bench", sif_data, tmp_path / "out", track=True,
                        generate_fn=FakeOracleGenerator("no_answer", every=2))
    progress = [e for e in follow(tmp_path / "events.jsonl") if e["event"] == "progress"]
    assert progress[-1]["stage"] == "evaluate" and (progress[-1]["done"], progress[-1]["total"]) == (6, 6)
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(res.run_id)
    assert run.data.metrics["sif-bench/format_failures"] == 3 and run.data.metrics["sif-bench/overall"] == 0.5
    assert run.data.tags["sifthinker.stage"] == "evaluate" and run.data.params["benchmark"] == "sif-bench"
    assert run.info.run_name == "evaluate:sif-bench" and "overall" not in run.data.metrics
    arts = {a.path for a in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(res.run_id,
                                                                                                      "sif-bench")}
    assert {"sif-bench/report.html", "sif-bench/predictions.jsonl", "sif-bench/metrics.json"} <= arts
