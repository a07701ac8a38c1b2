"""Serving: the OpenAI schema (unit), and the real `sifthinker serve` subprocess on a tiny model (V2 + OpenAI)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from sifthinker.prompts import INSTRUCTION, prompt_text
from sifthinker.serving import openai_api as oa

REPO = Path(__file__).resolve().parents[1]
VALID_TRACE = (
    '<think>\n<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>The whole scene.</text>\n'
    '<area>[{"bbox_2d":[0.1,0.2,0.4,0.6],"depth":0.25}, {"bbox_2d":[0.5,0.5,0.9,0.9],"depth":0.75}]</area>\n'
    "<text>The red cube is nearer.</text>\n</think>\n<answer>red cube</answer>"
)


def _images() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))).convert("RGB")
    return rgb, depth


def _body(**params):
    rgb, depth = _images()
    return oa.chat_request_body("Which is closer, the red cube or the blue sphere?", rgb, depth, "m", **params)


# ---- schema (no server) ----------------------------------------------------------------------------
def test_parse_chat_request_reads_question_images_and_params():
    rgb, depth = _images()
    body = oa.chat_request_body(prompt_text("Is the cube left of the sphere?"), rgb, depth, "m", max_tokens=7, temperature=0.5)
    req = oa.parse_chat_request(body, default_max_tokens=64)
    assert req.question == "Is the cube left of the sphere?"
    assert req.max_tokens == 7 and req.temperature == 0.5 and req.model == "m"
    assert np.array_equal(np.asarray(req.image), np.asarray(rgb)) and req.image.mode == "RGB"
    assert np.array_equal(np.asarray(req.depth_image), np.asarray(depth))
    # defaults; system messages ignored; max_completion_tokens accepted; JPEG accepted
    body = _body(max_completion_tokens=9)
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    jpeg = io.BytesIO()
    rgb.save(jpeg, format="JPEG")
    body["messages"][1]["content"][1]["image_url"]["url"] = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
    req = oa.parse_chat_request(body, default_max_tokens=64)
    assert req.max_tokens == 9 and req.temperature == 0.0 and req.image.size == (64, 48)
    del body["max_completion_tokens"]
    assert oa.parse_chat_request(body, default_max_tokens=64).max_tokens == 64


def test_strip_instruction_and_base64():
    assert oa.strip_instruction(f"Original image: <image>\nDepth image: <image>\nHow many cubes?  {INSTRUCTION}") == "How many cubes?"
    assert oa.strip_instruction("How many cubes?") == "How many cubes?"
    raw = bytes(range(250))
    assert oa.decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("="), "x") == raw
    with pytest.raises(oa.RequestError, match="not valid base64"):
        oa.decode_base64("abc$def", "x")


BAD_BODIES = {
    "not an object": ([1, 2], 400, "JSON object"),
    "no messages": ({"model": "m"}, 400, "messages must be a non-empty list"),
    "no user message": ({"messages": [{"role": "system", "content": "hi"}]}, 400, "no user message"),
    "text only": ({"messages": [{"role": "user", "content": "hello"}]}, 400, "no images"),
    "one image": ("one-image", 400, "got 1 image"),
    "three images": ("three-images", 400, "got 3 image"),
    "remote url": ("remote-url", 400, "only base64 data URLs"),
    "bad base64": ("bad-base64", 400, "not valid base64"),
    "not an image": ("not-an-image", 400, "not a readable image"),
    "not base64 data url": ("plain-data-url", 400, "must be base64-encoded"),
    "zero max_tokens": ("max0", 400, "max_tokens must be a positive integer"),
    "huge max_tokens": ("maxhuge", 400, "at most"),
    "bad temperature": ("temp", 400, "temperature must be a number"),
    "multi-turn": ("assistant", 400, "multi-turn"),
    "stream": ("stream", 400, "stream=true is not supported"),
    "n=2": ("n2", 400, "n must be 1"),
    "unknown part": ("audio", 400, "unsupported content part type"),
    "no question": ("no-question", 400, "no question text"),
}


def _bad_body(kind):
    if not isinstance(kind, str):
        return kind
    b = _body()
    parts = b["messages"][0]["content"]
    if kind == "one-image":
        del parts[2]
    elif kind == "three-images":
        parts.append(parts[1])
    elif kind == "remote-url":
        parts[1]["image_url"]["url"] = "https://example.com/cat.png"
    elif kind == "bad-base64":
        parts[2]["image_url"]["url"] = "data:image/png;base64,@@@not-base64@@@"
    elif kind == "not-an-image":
        parts[1]["image_url"]["url"] = "data:image/png;base64," + base64.b64encode(b"hello world").decode()
    elif kind == "plain-data-url":
        parts[1]["image_url"]["url"] = "data:image/png,rawdata"
    elif kind == "max0":
        b["max_tokens"] = 0
    elif kind == "maxhuge":
        b["max_tokens"] = 10**6
    elif kind == "temp":
        b["temperature"] = -1
    elif kind == "assistant":
        b["messages"].append({"role": "assistant", "content": "ok"})
    elif kind == "stream":
        b["stream"] = True
    elif kind == "n2":
        b["n"] = 2
    elif kind == "audio":
        parts.append({"type": "input_audio", "input_audio": {}})
    elif kind == "no-question":
        parts[0]["text"] = f"Original image: <image> Depth image: <image> {INSTRUCTION}"
    return b


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_parse_chat_request_rejects_client_mistakes(case):
    kind, status, message = BAD_BODIES[case]
    with pytest.raises(oa.RequestError, match=message) as ei:
        oa.parse_chat_request(_bad_body(kind), default_max_tokens=16)
    assert ei.value.status == status
    assert ei.value.to_json()["error"]["message"] == ei.value.message


def test_sif_summary_and_chat_completion_shape():
    s = oa.sif_summary(VALID_TRACE)
    assert s["format_valid"] and s["problems"] == [] and s["answer"] == "red cube"
    assert s["trace"][1] == {
        "boxes": [{"bbox_2d": [0.1, 0.2, 0.4, 0.6], "depth": 0.25}, {"bbox_2d": [0.5, 0.5, 0.9, 0.9], "depth": 0.75}],
        "text": "The red cube is nearer.",
    }
    assert oa.sif_summary("I think <answer>blue</answer>") == {
        "answer": "blue", "trace": None, "format_valid": False,
        "problems": ["expected exactly one <think>, found 0", "expected exactly one </think>, found 0"],
    }  # fmt: skip
    c = oa.chat_completion(VALID_TRACE, "m", finish_reason="length")
    from openai.types.chat import ChatCompletion

    parsed = ChatCompletion.model_validate(c)
    assert parsed.choices[0].message.content == VALID_TRACE and parsed.choices[0].finish_reason == "length"
    assert parsed.model_extra["sif"]["answer"] == "red cube"


# ---- the real server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(serving_server):
    return serving_server


def _openai(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_chat_completion_with_sif_field(server, tiny_model_dir):
    from sifthinker.config import RunConfig
    from sifthinker.model import GenRequest, generate, load_model

    client = _openai(server)
    rgb, depth = _images()
    question = "Which is closer, the red cube or the blue sphere?"
    body = oa.chat_request_body(question, rgb, depth, server.model_name)
    reply = client.chat.completions.create(
        model=server.model_name, messages=body["messages"], max_tokens=12, temperature=0.0
    )
    assert reply.object == "chat.completion" and reply.model == server.model_name
    text = reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant"
    # the served text is the greedy completion of the same question and images, generated here in-process:
    # the route passes the question (instruction stripped), both images and max_tokens through unchanged
    model, processor = load_model(tiny_model_dir, RunConfig.load(REPO / "recipes" / "local.yaml"))
    (expected,) = generate(model, processor, [GenRequest(rgb, depth, question)], max_new_tokens=12)
    # the random model writes something (generation never picks embedding rows past the tokenizer)
    assert text == expected and text != ""
    # "length" when the completion used up max_tokens, else "stop"
    used = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert reply.choices[0].finish_reason == ("length" if used >= 12 else "stop")
    sif = reply.model_extra["sif"]
    assert set(sif) == {"answer", "trace", "format_valid", "problems"}
    assert sif == oa.sif_summary(text)  # the extra field describes exactly the returned text
    # greedy decoding is deterministic
    again = client.chat.completions.create(model=server.model_name, messages=body["messages"], max_tokens=12, temperature=0)
    assert again.choices[0].message.content == text
    models = client.models.list()
    assert server.model_name in [m.id for m in models.data]


def test_v2_infer_matches_openai_route(server):
    rgb, depth = _images()
    question = "Which is closer, the red cube or the blue sphere?"
    payload = {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(rgb)]},
            {"name": "depth_image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(depth)]},
            {"name": "question", "shape": [1], "datatype": "BYTES", "data": [question]},
        ],
        "parameters": {"max_tokens": 12},
    }
    r = requests.post(f"{server.url}/v2/models/{server.model_name}/infer", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert set(out) == {"text", "answer", "trace"} and all(o["datatype"] == "BYTES" for o in out.values())
    text = out["text"]["data"][0]
    trace = json.loads(out["trace"]["data"][0])
    summary = oa.sif_summary(text)
    assert trace == {"steps": summary["trace"], "format_valid": summary["format_valid"], "problems": summary["problems"]}
    assert out["answer"]["data"][0] == (summary["answer"] or "")
    # the same question through the OpenAI route gives the same greedy text
    body = oa.chat_request_body(question, rgb, depth, server.model_name, max_tokens=12)
    r2 = requests.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=120)
    assert r2.status_code == 200 and r2.json()["choices"][0]["message"]["content"] == text
    # model metadata advertises the tensors
    meta = requests.get(f"{server.url}/v2/models/{server.model_name}", timeout=30).json()
    assert [i["name"] for i in meta["inputs"]] == ["image", "depth_image", "question"]


def test_v2_with_kserve_rest_client_and_binary_extension(server):
    """KServe's own REST client, inputs sent through the binary extension (base64 text as raw bytes);
    raw (non-UTF-8) image bytes are a clear 400 (KServe's decoder cannot pass them on), not a 500."""
    import sifthinker.serving.server  # noqa: F401, I001  (first: imports kserve with a clean argv)
    import httpx
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    rgb, depth = _images()

    def request(values):
        inputs = []
        for name, value in zip(("image", "depth_image", "question"), values, strict=True):
            inp = InferInput(name, [1], "BYTES")
            inp.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
            inputs.append(inp)
        return InferRequest(model_name=server.model_name, infer_inputs=inputs, parameters={"max_tokens": 8})

    async def call(req):
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        return await client.infer(server.url, req, model_name=server.model_name)

    res = asyncio.run(call(request([oa.encode_image(rgb).encode(), oa.encode_image(depth).encode(), b"Is the cube red?"])))
    outs = {o.name: o for o in res.outputs}
    assert set(outs) == {"text", "answer", "trace"}
    text = outs["text"].data[0]
    assert json.loads(outs["trace"].data[0])["format_valid"] == oa.sif_summary(text)["format_valid"]

    png = io.BytesIO()
    rgb.save(png, format="PNG")
    with pytest.raises(httpx.HTTPStatusError) as ei:
        asyncio.run(call(request([png.getvalue(), png.getvalue(), b"q?"])))
    assert ei.value.response.status_code == 400 and "base64" in ei.value.response.json()["error"]


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_openai_route_answers_client_mistakes_with_4xx(server, case):
    kind, status, message = BAD_BODIES[case]
    r = requests.post(f"{server.url}/openai/v1/chat/completions", json=_bad_body(kind), timeout=60)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_openai_route_transport_errors(server):
    url = f"{server.url}/openai/v1/chat/completions"
    r = requests.post(url, data=json.dumps(_body()), headers={"Content-Type": "text/plain"}, timeout=60)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    r = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    body = _body()
    body["model"] = "someone-else"
    r = requests.post(url, json=body, timeout=60)
    assert r.status_code == 404 and "not served here" in r.json()["error"]["message"]
    # the openai client surfaces the message
    import openai

    with pytest.raises(openai.BadRequestError, match="got 1 image"):
        b = _bad_body("one-image")
        _openai(server).chat.completions.create(model=server.model_name, messages=b["messages"])


V2_BAD = {
    "missing input": (lambda p: p["inputs"].pop(2), "missing input(s): question"),
    "batch of two": (lambda p: p["inputs"][0].update(shape=[2], data=[p["inputs"][0]["data"][0]] * 2), "one item per request"),
    "bad base64": (lambda p: p["inputs"][1].update(data=["%%%"]), "not valid base64"),
    "not an image": (lambda p: p["inputs"][0].update(data=[base64.b64encode(b"text").decode()]), "not a readable image"),
    "wrong datatype": (lambda p: p["inputs"][2].update(datatype="INT32", data=[1]), "must have datatype BYTES"),
    "unknown input": (lambda p: p["inputs"].append({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}), "unknown input"),
    "bad max_tokens": (lambda p: p.update(parameters={"max_tokens": 0}), "max_tokens must be an integer"),
}


@pytest.mark.parametrize("case", sorted(V2_BAD))
def test_v2_client_mistakes_are_400(server, case):
    rgb, depth = _images()
    payload = {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(rgb)]},
            {"name": "depth_image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(depth)]},
            {"name": "question", "shape": [1], "datatype": "BYTES", "data": ["q?"]},
        ]
    }
    mutate, message = V2_BAD[case]
    mutate(payload)
    r = requests.post(f"{server.url}/v2/models/{server.model_name}/infer", json=payload, timeout=60)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_serve_cli_resolves_a_registry_alias(tiny_model_dir, tmp_path):
    """`sifthinker serve --model models:/NAME@champion` downloads the champion and serves it under the
    served name and the registered name."""
    import dataclasses

    from sifthinker import registry
    from sifthinker.config import RunConfig
    from sifthinker.serving.process import free_port, start_process, stop_process, wait_http

    work = tmp_path / "work"
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg = dataclasses.replace(
        cfg, registry=dataclasses.replace(cfg.registry, tracking_uri=f"sqlite:///{work / 'mlflow.db'}", artifact_root=str(work / "art"))
    )
    rv = registry.register_model(cfg, tiny_model_dir, {"format_validity": 0.0}, {})
    registry.promote(cfg, rv.name, rv.version)
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [
        sys.executable, "-m", "sifthinker.cli", "serve", "--model", f"models:/{rv.name}@champion",
        "--recipe", str(REPO / "recipes" / "local.yaml"), "--tracking-uri", cfg.tracking_uri, "--port", str(port),
    ]  # fmt: skip
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "SIFTHINKER_WORK_DIR": str(work)}
    proc = start_process(cmd, log, env=env, cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc, log, timeout=300)
        ids = [m["id"] for m in requests.get(f"http://127.0.0.1:{port}/openai/v1/models", timeout=30).json()["data"]]
        assert ids == [cfg.serving.name, rv.name, f"models:/{rv.name}@champion"]
        body = _body(max_tokens=4)
        body["model"] = rv.name
        r = requests.post(f"http://127.0.0.1:{port}/openai/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
    finally:
        stop_process(proc)
    assert "downloaded to" in log.read_text()
