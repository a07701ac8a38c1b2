"""Serving: the request schema (unit), and the real `sifthinker serve` subprocess on the tiny model through
the openai client (plain and streamed), KServe's REST client (V1, V2 JSON and binary) and plain HTTP.

Limits and attacks: test_serving_limits.py; batching: test_serving_batching.py; fuzzing and load:
test_serving_fuzz.py, test_serving_load.py; the vLLM transformer: test_serving_transformer.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from sifthinker.method.prompts import INSTRUCTION, prompt_text
from sifthinker.serving import openai_api as oa
from sifthinker.serving import request as rq
from sifthinker.serving.images import url_allowed
from sifthinker.serving.limits import Limits

REPO = Path(__file__).resolve().parents[2]
LIMITS = Limits(default_max_tokens=16)
QUESTION = "Which is closer, the red cube or the blue sphere?"
VALID_TRACE = (
    '<think>\n<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>The whole scene.</text>\n'
    '<area>[{"bbox_2d":[0.1,0.2,0.4,0.6],"depth":0.25}, {"bbox_2d":[0.5,0.5,0.9,0.9],"depth":0.75}]</area>\n'
    "<text>The red cube is nearer.</text>\n</think>\n<answer>red cube</answer>"
)


def _images(seed: int = 0) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))).convert("RGB")
    return rgb, depth


def _body(**params):
    rgb, depth = _images()
    return oa.chat_request_body(QUESTION, rgb, depth, "m", **params)


def _same_image(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


# ---- schema (no server) ----------------------------------------------------------------------------
def test_parse_chat_request_reads_question_images_and_params():
    rgb, depth = _images()
    body = oa.chat_request_body(prompt_text("Is the cube left of the sphere?"), rgb, depth, "m", max_tokens=7,
                                temperature=0.5, sif={"draw": True}, stream=True, stream_options={"include_usage": True})
    ask = oa.parse_chat_request(body, LIMITS)
    assert (ask.question, ask.max_tokens, ask.temperature, ask.model) == ("Is the cube left of the sphere?", 7, 0.5, "m")
    assert (ask.draw, ask.stream, ask.include_usage, len(ask.rgb), len(ask.depth)) == (True, True, True, 1, 1)
    d = rq.decode(ask, LIMITS, depth_provider=None)
    assert _same_image(d.images[0], rgb) and _same_image(d.depth_images[0], depth) and d.images[0].mode == "RGB"
    # defaults; max_completion_tokens; JPEG; one image -> the depth provider makes its depth image
    body = _body(max_completion_tokens=9)
    jpeg = io.BytesIO()
    rgb.save(jpeg, format="JPEG")
    body["messages"][0]["content"][1]["image_url"]["url"] = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
    ask = oa.parse_chat_request(body, LIMITS)
    assert (ask.max_tokens, ask.temperature, ask.draw, ask.stream) == (9, 0.0, False, False)
    del body["max_completion_tokens"]
    del body["messages"][0]["content"][2]
    ask = oa.parse_chat_request(body, LIMITS)
    assert ask.max_tokens == 16 and len(ask.rgb) == 1 and ask.depth == []
    d = rq.decode(ask, LIMITS, depth_provider=lambda im: Image.new("RGB", im.size, (1, 2, 3)))
    assert d.images[0].size == (64, 48) and d.depth_images[0].getpixel((0, 0)) == (1, 2, 3)
    # 2N images: N RGB images, then their N depth images; no-op values of unsupported parameters pass
    body = _body(top_p=1, stop=None, seed=None, user="u1")
    body["messages"][0]["content"] += body["messages"][0]["content"][1:]
    ask = oa.parse_chat_request(body, dataclasses.replace(LIMITS, max_images=4))  # the default is 2
    assert [r.param for r in ask.rgb] == ["messages[0].content[1]", "messages[0].content[2]"]
    assert [r.param for r in ask.depth] == ["messages[0].content[3]", "messages[0].content[4]"]


def test_strip_instruction_and_base64():
    assert oa.strip_instruction(f"Original image: <image>\nDepth image: <image>\nHow many cubes?  {INSTRUCTION}") == "How many cubes?"
    assert oa.strip_instruction(prompt_text("How many cubes?", n_images=2)) == "How many cubes?"
    assert oa.strip_instruction("How many cubes?") == "How many cubes?"
    raw = bytes(range(250))
    assert oa.decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("="), "x") == raw
    with pytest.raises(oa.RequestError, match="not valid base64"):
        oa.decode_base64("abc$def", "x")


BAD_BODIES = {
    "not an object": ([1, 2], 400, "JSON object"),
    "no messages": ({"model": "m"}, 400, "messages must be a non-empty list"),
    "system message": ("system", 400, "system instructions are not supported"),
    "text only": ({"messages": [{"role": "user", "content": "hello"}]}, 400, "no images"),
    "three images": ("three-images", 400, "got 3 image(s)"),
    "two items by default": ("four-images", 400, "got 4 image(s) (2 RGB image(s) and their depth images), more than 2"),
    "remote url": ("remote-url", 400, "only base64 data URLs"),
    "bad base64": ("bad-base64", 400, "not valid base64"),
    "not an image": ("not-an-image", 400, "not a readable image"),
    "not base64 data url": ("plain-data-url", 400, "must be base64-encoded"),
    "zero max_tokens": ("max0", 400, "max_tokens must be a positive integer"),
    "huge max_tokens": ("maxhuge", 400, "(limit serving.max_tokens_limit)"),
    "bad temperature": ("temp", 400, "temperature must be a number"),
    "multi-turn": ("assistant", 400, "multi-turn"),
    "stream not bool": ("stream", 400, "stream must be true or false"),
    "stream_options alone": ("stream-options", 400, "only allowed with stream: true"),
    "n=2": ("n2", 400, "n must be 1"),
    "unknown part": ("audio", 400, "unsupported content part type"),
    "no question": ("no-question", 400, "no question text"),
    "unknown field": ("unknown", 400, "unknown field 'frobnicate'"),
    "unsupported top_p": ("top-p", 400, "top_p=0.5 is not supported"),
    "unsupported stop": ("stop", 400, "stop=['x'] is not supported"),
    "bool for a number": ("bool-top-p", 400, "top_p=True is not supported"),
    "unknown part key": ("part-key", 400, "unknown field 'cache_control'"),
    "image detail": ("detail", 400, "detail='high' is not supported"),
    "sif.draw not bool": ("draw", 400, "sif.draw must be true or false"),
    "too many images": ("ten-images", 400, "(limit serving.max_images)"),
}


def _bad_body(kind):
    if not isinstance(kind, str):
        return kind
    b = _body()
    parts = b["messages"][0]["content"]
    edits = {
        "three-images": lambda: parts.append(parts[1]),
        "four-images": lambda: parts.extend(parts[1:]),
        "ten-images": lambda: parts.extend([parts[1]] * 8),
        "remote-url": lambda: parts[1]["image_url"].update(url="https://example.com/cat.png"),
        "bad-base64": lambda: parts[2]["image_url"].update(url="data:image/png;base64,@@@not-base64@@@"),
        "not-an-image": lambda: parts[1]["image_url"].update(url="data:image/png;base64," + base64.b64encode(b"hello").decode()),
        "plain-data-url": lambda: parts[1]["image_url"].update(url="data:image/png,rawdata"),
        "max0": lambda: b.update(max_tokens=0),
        "maxhuge": lambda: b.update(max_tokens=10**6),
        "temp": lambda: b.update(temperature=-1),
        "assistant": lambda: b["messages"].append({"role": "assistant", "content": "ok"}),
        "system": lambda: b["messages"].insert(0, {"role": "system", "content": "be brief"}),
        "stream": lambda: b.update(stream="yes"),
        "stream-options": lambda: b.update(stream_options={"include_usage": True}),
        "n2": lambda: b.update(n=2),
        "audio": lambda: parts.append({"type": "input_audio", "input_audio": {}}),
        "no-question": lambda: parts[0].update(text=f"Original image: <image> Depth image: <image> {INSTRUCTION}"),
        "unknown": lambda: b.update(frobnicate=1),
        "top-p": lambda: b.update(top_p=0.5),
        "stop": lambda: b.update(stop=["x"]),
        "bool-top-p": lambda: b.update(top_p=True),
        "part-key": lambda: parts[0].update(cache_control={}),
        "detail": lambda: parts[1]["image_url"].update(detail="high"),
        "draw": lambda: b.update(sif={"draw": 1}),
    }
    edits[kind]()
    return b


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_parse_chat_request_rejects_client_mistakes(case):
    kind, status, message = BAD_BODIES[case]
    with pytest.raises(oa.RequestError) as ei:
        ask = oa.parse_chat_request(_bad_body(kind), LIMITS)
        rq.decode(ask, LIMITS, depth_provider=None)  # image errors surface when decoding
    assert ei.value.status == status and message in ei.value.message
    assert ei.value.to_json()["error"]["message"] == ei.value.message


def test_sif_object_parses_the_trace_with_pixel_boxes_and_draws_it():
    from sifthinker.serving.sif import sif_object

    s = oa.sif_summary(VALID_TRACE)
    assert s["format_valid"] and s["problems"] == [] and s["answer"] == "red cube"
    assert s["trace"][1] == {
        "boxes": [{"bbox_2d": [0.1, 0.2, 0.4, 0.6], "depth": 0.25}, {"bbox_2d": [0.5, 0.5, 0.9, 0.9], "depth": 0.75}],
        "text": "The red cube is nearer.",
    }
    rgb, depth = _images()
    o = sif_object(VALID_TRACE, rgb, depth, draw=True)
    assert o["image_size"] == [64, 48]
    assert o["trace"][1]["boxes"][0] == {"bbox_2d": [0.1, 0.2, 0.4, 0.6], "depth": 0.25, "bbox_px": [6.4, 9.6, 25.6, 28.8]}
    drawing = Image.open(io.BytesIO(base64.b64decode(o["drawing"].removeprefix("data:image/png;base64,"))))
    assert drawing.format == "PNG" and drawing.width > 2 * 480  # the image and its depth image, upscaled
    assert oa.sif_summary("I think <answer>blue</answer>") == {
        "answer": "blue", "trace": None, "format_valid": False,
        "problems": ["expected exactly one <think>, found 0", "expected exactly one </think>, found 0"],
    }  # fmt: skip
    from openai.types.chat import ChatCompletion

    parsed = ChatCompletion.model_validate(oa.chat_completion(VALID_TRACE, "m", finish_reason="length"))
    assert parsed.choices[0].message.content == VALID_TRACE and parsed.choices[0].finish_reason == "length"
    assert parsed.model_extra["sif"]["answer"] == "red cube"


def test_image_urls_are_fetched_only_under_an_allowed_prefix():
    allow = ("https://bucket.example.com/images/", "https://cdn.example.com")
    assert url_allowed("https://bucket.example.com/images/a.png", allow)
    assert url_allowed("https://cdn.example.com/x/a.png", allow)
    assert not url_allowed("https://cdn.example.com.evil.org/a.png", allow)  # not on a path boundary
    assert not url_allowed("https://bucket.example.com/other/a.png", allow)
    assert not url_allowed("https://user@cdn.example.com/a.png", allow)
    assert not url_allowed("file:///etc/passwd", ("file:///",))


# ---- the real server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(serving_server):
    return serving_server


@pytest.fixture(scope="module")
def limited(limited_server):
    return limited_server


def _openai(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/openai/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local_model(tiny_model_dir):
    from sifthinker.config.run_config import RunConfig
    from sifthinker.model import load_model

    return load_model(tiny_model_dir, RunConfig.load(REPO / "recipes" / "local.yaml"))


def _direct(local_model, rgb, depth, question, max_new_tokens, more=(), more_depth=()):
    from sifthinker.model import GenRequest, generate

    (text,) = generate(*local_model, [GenRequest(rgb, depth, question, tuple(more), tuple(more_depth))], max_new_tokens)
    return text


def test_openai_chat_completion_plain_and_streamed(server, local_model):
    client = _openai(server)
    rgb, depth = _images()
    body = oa.chat_request_body(QUESTION, rgb, depth, server.model_name)
    reply = client.chat.completions.create(model=server.model_name, messages=body["messages"], max_tokens=12,
                                           temperature=0.0, extra_body={"sif": {"draw": True}})
    assert reply.object == "chat.completion" and reply.model == server.model_name
    text = reply.choices[0].message.content
    # the served text is the greedy completion of the same question and images, generated here in-process
    expected = _direct(local_model, rgb, depth, QUESTION, 12)
    assert text == expected and text != ""
    used = len(local_model[1].tokenizer(text, add_special_tokens=False)["input_ids"])
    assert reply.choices[0].finish_reason == ("length" if used >= 12 else "stop")
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 12
    sif = reply.model_extra["sif"]
    assert {k: v for k, v in sif.items() if k != "drawing"} == {**oa.sif_summary(text), "image_size": [64, 48]}
    assert sif["drawing"].startswith("data:image/png;base64,")
    # streamed: the same text in pieces, the last content chunk carries sif, then usage, then [DONE]
    chunks = list(client.chat.completions.create(model=server.model_name, messages=body["messages"], max_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text and len([p for p in pieces if p]) >= 2
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == reply.choices[0].finish_reason
    assert last.model_extra["sif"] == oa.sif_summary(text) | {"image_size": [64, 48]}
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert server.model_name in [m.id for m in client.models.list().data]


def test_one_image_gets_its_depth_from_the_provider_and_2n_images_are_n_items(server, limited, local_model):
    """One image: the provider makes its depth image. 2N images (N RGB, then their depth images) are one
    multi-image item where serving.max_images allows 2N (the limited server: 4), a 400 naming the limit by
    default (2)."""
    from sifthinker.data.depth_providers import FakeGradientDepth

    rgb, _ = _images()
    body = oa.chat_request_body(QUESTION, rgb, None, server.model_name, max_tokens=10)
    r = requests.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    # the local recipe's provider is the named fake: its depth image, sent explicitly, gives the same text
    assert r.json()["choices"][0]["message"]["content"] == _direct(local_model, rgb, FakeGradientDepth()(rgb), QUESTION, 10)
    rgb2, depth2 = _images(1)
    _, depth = _images()
    body = oa.chat_request_body(QUESTION, rgb, depth, server.model_name, max_tokens=6)
    parts = body["messages"][0]["content"]
    parts[2:2] = [{"type": "image_url", "image_url": {"url": oa.data_url(rgb2)}}]
    parts.append({"type": "image_url", "image_url": {"url": oa.data_url(depth2)}})
    r = requests.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["limit"] == "max_images", r.text
    body["model"] = limited.model_name
    r = requests.post(f"{limited.url}/openai/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == _direct(local_model, rgb, depth, QUESTION, 6, [rgb2], [depth2])


def _v2_payload(rgb, depth, question=QUESTION, **params):
    return {"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(rgb)]},
        {"name": "depth_image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(depth)]},
        {"name": "question", "shape": [1], "datatype": "BYTES", "data": [question]},
    ], "parameters": params}


def test_v2_and_v1_match_the_openai_route(server):
    rgb, depth = _images()
    r = requests.post(f"{server.url}/v2/models/{server.model_name}/infer", json=_v2_payload(rgb, depth, max_tokens=12),
                      timeout=120)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert set(out) == {"text", "answer", "trace", "sif"} and all(o["datatype"] == "BYTES" for o in out.values())
    text = out["text"]["data"][0]
    summary = oa.sif_summary(text)
    assert json.loads(out["trace"]["data"][0]) == {"steps": summary["trace"], "format_valid": summary["format_valid"],
                                                   "problems": summary["problems"]}
    assert json.loads(out["sif"]["data"][0]) == summary | {"image_size": [64, 48]}
    assert out["answer"]["data"][0] == (summary["answer"] or "")
    body = oa.chat_request_body(QUESTION, rgb, depth, server.model_name, max_tokens=12)
    r2 = requests.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=120)
    assert r2.status_code == 200 and r2.json()["choices"][0]["message"]["content"] == text
    # requested outputs only
    payload = _v2_payload(rgb, depth, max_tokens=12) | {"outputs": [{"name": "answer"}]}
    r3 = requests.post(f"{server.url}/v2/models/{server.model_name}/infer", json=payload, timeout=120)
    assert [o["name"] for o in r3.json()["outputs"]] == ["answer"]
    # V1: instances generated together, each as the V2 answer
    inst = {"question": QUESTION, "image": oa.encode_image(rgb), "depth_image": oa.encode_image(depth)}
    r4 = requests.post(f"{server.url}/v1/models/{server.model_name}:predict",
                       json={"instances": [inst, inst], "parameters": {"max_tokens": 12}}, timeout=120)
    assert r4.status_code == 200, r4.text
    assert [p["text"] for p in r4.json()["predictions"]] == [text, text]
    meta = requests.get(f"{server.url}/v2/models/{server.model_name}", timeout=30).json()
    assert [i["name"] for i in meta["inputs"]] == ["image", "depth_image", "question"]


def test_kserve_rest_clients_v2_binary_raw_bytes_and_v1(server):
    """KServe's own REST client: V2 with the binary extension carrying base64 text or the raw PNG bytes
    (both answered alike), and V1."""
    import sifthinker.serving.server  # noqa: F401, I001  (first: imports kserve with a clean argv)
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    rgb, depth = _images()

    def png(im):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    def request(values):
        inputs = []
        for name, value in zip(("image", "depth_image", "question"), values, strict=True):
            inp = InferInput(name, [1], "BYTES")
            inp.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
            inputs.append(inp)
        return InferRequest(model_name=server.model_name, infer_inputs=inputs, parameters={"max_tokens": 8})

    async def call(req, protocol="v2"):
        client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=120))
        return await client.infer(server.url, req, model_name=server.model_name)

    as_text = asyncio.run(call(request([oa.encode_image(rgb).encode(), oa.encode_image(depth).encode(), QUESTION.encode()])))
    as_raw = asyncio.run(call(request([png(rgb), png(depth), QUESTION.encode()])))
    texts = [{o.name: o for o in res.outputs}["text"].data[0] for res in (as_text, as_raw)]
    assert texts[0] == texts[1] and texts[0] != ""
    v1 = asyncio.run(call({"instances": [{"question": QUESTION, "image": oa.encode_image(rgb),
                                          "depth_image": oa.encode_image(depth)}], "parameters": {"max_tokens": 8}}, "v1"))
    assert v1["predictions"][0]["text"] == texts[0]


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_openai_route_answers_client_mistakes_with_4xx(server, case):
    kind, status, message = BAD_BODIES[case]
    body = _bad_body(kind)
    if isinstance(body, dict) and body.get("model") == "m":
        body["model"] = server.model_name  # a wrong name is its own 404 (test_openai_route_transport_errors)
    r = requests.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=60)
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
    r = requests.post(url, json={"model": "someone-else", "messages": [{"role": "user", "content": "hi"}]},
                      timeout=60)  # no image either: the wrong name is still the 404 docs/serving.md promises
    assert r.status_code == 404 and "not served here" in r.json()["error"]["message"]
    import openai

    with pytest.raises(openai.BadRequestError, match=r"got 3 image\(s\)"):
        b = _bad_body("three-images")
        _openai(server).chat.completions.create(model=server.model_name, messages=b["messages"])


V2_BAD = {
    "missing input": (lambda p: p["inputs"].pop(2), "missing input(s): question"),
    "two questions": (lambda p: p["inputs"][2].update(shape=[2], data=["a", "b"]), "one question per request"),
    "depth count": (lambda p: p["inputs"][0].update(shape=[2], data=[p["inputs"][0]["data"][0]] * 2), "2 image(s) but 1 depth"),
    "shape mismatch": (lambda p: p["inputs"][0].update(shape=[3]), "has shape [3] but 1 element"),
    "bad base64": (lambda p: p["inputs"][1].update(data=["%%%"]), "not valid base64"),
    "not an image": (lambda p: p["inputs"][0].update(data=[base64.b64encode(b"text").decode()]), "not a readable image"),
    "wrong datatype": (lambda p: p["inputs"][2].update(datatype="INT32", data=[1]), "must have datatype BYTES"),
    "unknown input": (lambda p: p["inputs"].append({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}), "unknown input"),
    "bad max_tokens": (lambda p: p.update(parameters={"max_tokens": 0}), "max_tokens must be a positive integer"),
    "unknown parameter": (lambda p: p.update(parameters={"top_k": 3}), "unknown field 'top_k'"),
    "binary output": (lambda p: p.update(parameters={"binary_data_output": True}), "outputs are JSON"),
}


@pytest.mark.parametrize("case", sorted(V2_BAD))
def test_v2_client_mistakes_are_400(server, case):
    rgb, depth = _images()
    payload = _v2_payload(rgb, depth, "q?")
    mutate, message = V2_BAD[case]
    mutate(payload)
    r = requests.post(f"{server.url}/v2/models/{server.model_name}/infer", json=payload, timeout=60)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_metrics_and_json_request_logs_without_payloads(server):
    rgb, depth = _images()
    body = oa.chat_request_body(QUESTION, rgb, depth, server.model_name, max_tokens=4)
    assert requests.post(f"{server.url}/openai/v1/chat/completions", json=body, timeout=120).status_code == 200
    assert requests.post(f"{server.url}/openai/v1/chat/completions", json={"x": 1}, timeout=60).status_code == 400
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(requests.get(f"{server.url}/metrics", timeout=30).text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert samples[("sifthinker_requests_total", (("route", "openai_chat"), ("status", "200")))] >= 1
    assert samples[("sifthinker_requests_total", (("route", "openai_chat"), ("status", "400")))] >= 1
    assert samples[("sifthinker_request_seconds_count", (("route", "openai_chat"),))] >= 2
    assert samples[("sifthinker_batch_size_count", ())] >= 1 and samples[("sifthinker_generated_tokens_total", ())] >= 4
    assert samples[("sifthinker_queue_depth", ())] == 0
    lines = [json.loads(ln) for ln in server.log.read_text().splitlines() if ln.startswith('{"event": "request"')]
    chat = [ln for ln in lines if ln["route"] == "openai_chat"]
    ok = next(ln for ln in chat if ln["status"] == 200 and ln.get("max_tokens") == 4)
    assert ok["model"] == server.model_name and ok["prompt_tokens"] > 0 and 1 <= ok["completion_tokens"] <= 4
    assert {"request_id", "duration_ms", "batch_size", "queue_ms", "images"} <= set(ok)
    assert any(ln["status"] == 400 and "unknown field" in ln["error"] for ln in chat)
    text = server.log.read_text()
    assert oa.encode_image(rgb)[:200] not in text and QUESTION not in text  # no payloads in the logs
    # one line per request (ours): no uvicorn access line, no KServe timing lines, no misleading startup line
    assert "uvicorn.access" not in text and "kserve.trace" not in text, text[-2000:]
    assert "OpenAI endpoints not registered" not in text and "Uvicorn running on" in text


def test_serve_cli_resolves_a_registry_alias_and_answers_to_one_set_of_names(tiny_model_dir, tmp_path):
    """`sifthinker serve --model models:/NAME@champion` downloads the champion and serves it under the served
    name; every route also accepts the registered name and the URI, and answers with the served name."""
    import dataclasses

    from sifthinker.config.run_config import RunConfig
    from sifthinker.registry import model_versions
    from sifthinker.serving.process import free_port, start_process, stop_process, wait_http

    work = tmp_path / "work"
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg = dataclasses.replace(
        cfg, registry=dataclasses.replace(cfg.registry, tracking_uri=f"sqlite:///{work / 'mlflow.db'}", artifact_root=str(work / "art"))
    )
    rv = model_versions.register_model(cfg, tiny_model_dir, {"format_validity": 0.0}, {})
    model_versions.promote(cfg, rv.name, rv.version)
    port = free_port()
    log = tmp_path / "serve.log"
    uri = f"models:/{rv.name}@champion"
    cmd = [
        sys.executable, "-m", "sifthinker.cli", "serve", "--model", uri,
        "--recipe", str(REPO / "recipes" / "local.yaml"), "--tracking-uri", cfg.tracking_uri, "--port", str(port),
    ]  # fmt: skip
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "SIFTHINKER_WORK_DIR": str(work)}
    proc = start_process(cmd, log, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/v2/health/ready", proc, log, timeout=300)
        ids = [m["id"] for m in requests.get(f"{base}/openai/v1/models", timeout=30).json()["data"]]
        assert ids == [cfg.serving.name, rv.name, uri]
        rgb, depth = _images()
        for name in ids:
            r = requests.post(f"{base}/openai/v1/chat/completions", timeout=120,
                              json=oa.chat_request_body(QUESTION, rgb, depth, name, max_tokens=4))
            assert r.status_code == 200 and r.json()["model"] == cfg.serving.name, r.text
            r = requests.post(f"{base}/v2/models/{name}/infer", json=_v2_payload(rgb, depth, max_tokens=4), timeout=120)
            assert r.status_code == 200 and r.json()["model_name"] == cfg.serving.name, r.text
            r = requests.post(f"{base}/v1/models/{name}:predict", timeout=120, json={"instances": [
                {"question": QUESTION, "image": oa.encode_image(rgb)}], "parameters": {"max_tokens": 4}})
            assert r.status_code == 200, r.text
        for route in (f"{base}/v2/models/other/infer", f"{base}/v1/models/other:predict"):
            r = requests.post(route, json={}, timeout=30)
            assert r.status_code == 404 and "not served here" in r.json()["error"]
        assert requests.get(f"{base}/v2/models/{rv.name}/ready", timeout=30).status_code == 200
        # Was: shutdown waited on running generations (SIGTERM ignored while they ran). This server ends here:
        # SIGTERM during a 4000-token streamed generation ends the stream with an error event, and the process.
        body = oa.chat_request_body(QUESTION, rgb, depth, cfg.serving.name, max_tokens=4000, stream=True)
        r = requests.post(f"{base}/openai/v1/chat/completions", json=body, stream=True, timeout=60)
        lines = r.iter_lines(decode_unicode=True)
        assert next(ln for ln in lines if ln.startswith("data:"))  # generating now
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        rest = list(lines)
        proc.wait(60)
        took = time.monotonic() - t0
    finally:
        stop_process(proc)
    assert "downloaded to" in log.read_text()
    assert any('"code": "shutdown"' in ln or "shutting down" in ln for ln in rest), rest[-3:]
    assert proc.returncode is not None and took < 30, took  # 4000 tokens would take minutes
