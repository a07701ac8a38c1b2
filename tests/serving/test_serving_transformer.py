"""The SIF transformer (`sifthinker serve --predictor-host`), as a real process, in front of
(1) ``StandInOpenAIPredictor``: a STAND-IN for KServe's Hugging Face runtime with the vLLM backend (no
GPU, no vLLM here): an OpenAI-compatible server that records what it is sent and answers a fixed SIF
trace, plain or streamed; and (2) the real native predictor (`sifthinker serve` on the tiny model)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import random_image, send_json, transformer

from sifthinker.method.prompts import INSTRUCTION
from sifthinker.serving import openai_api as oa

REPO = Path(__file__).resolve().parents[2]
TRACE = ('<think>\n<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>The whole scene.</text>\n'
         '<area>[{"bbox_2d":[0.25,0.5,0.5,1],"depth":0.2}]</area>\n<text>The cube.</text>\n</think>\n'
         "<answer>red cube</answer>")
QUESTION = "Which is closer, the red cube or the blue sphere?"


class StandInOpenAIPredictor:
    """STAND-IN for the vLLM predictor's OpenAI routes (see the module docstring)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.refuse = None  # (status, message) to answer instead
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, status, obj):
                send_json(self, status, obj)

            def do_GET(self):  # noqa: N802
                self._json(200, {"object": "list", "data": [{"id": "sifthinker", "object": "model"}]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests.append(body)
                if stand_in.refuse:
                    status, msg = stand_in.refuse
                    return self._json(status, {"error": {"message": msg, "type": "BadRequestError"}})
                if not body.get("stream"):
                    return self._json(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                            "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": TRACE}}],
                                            "usage": {"prompt_tokens": 300, "completion_tokens": 80}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = [TRACE[i:i + 9] for i in range(0, len(TRACE), 9)]
                events = [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
                events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                events.append({"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 80}})
                for ev in events:
                    self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stand_in():
    s = StandInOpenAIPredictor()
    yield s
    s.httpd.shutdown()


@pytest.fixture(scope="module")
def front(stand_in, tmp_path_factory):
    # KServe hands a transformer the predictor as host[:port]; the OpenAI routes are under /openai/v1
    with transformer(tmp_path_factory.mktemp("transformer"), stand_in.url.removeprefix("http://"), "sifthinker") as url:
        yield url


def test_transformer_forwards_the_sif_prompt_and_post_processes_the_reply(front, stand_in):
    from openai import OpenAI

    client = OpenAI(base_url=f"{front}/openai/v1", api_key="unused", max_retries=0)
    rgb = random_image()
    body = oa.chat_request_body(QUESTION, rgb, None, "sifthinker")
    reply = client.chat.completions.create(model="sifthinker", messages=body["messages"], max_tokens=77,
                                           extra_body={"sif": {"draw": True}})
    assert reply.choices[0].message.content == TRACE and reply.usage.completion_tokens == 80
    sif = reply.model_extra["sif"]
    assert sif["answer"] == "red cube" and sif["format_valid"] and sif["image_size"] == [64, 48]
    assert sif["trace"][1]["boxes"][0]["bbox_px"] == [16.0, 24.0, 32.0, 48.0]
    assert sif["drawing"].startswith("data:image/png;base64,")
    sent = stand_in.requests[-1]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("sifthinker", 77, 0.0)
    parts = sent["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]  # RGB, then depth
    assert parts[0]["text"] == "Original image: " and QUESTION in parts[-1]["text"] and INSTRUCTION in parts[-1]["text"]
    from sifthinker.data.depth_providers import FakeGradientDepth

    assert parts[3]["image_url"]["url"] == oa.data_url(FakeGradientDepth()(rgb))  # the transformer's depth provider
    # streamed through: the same text, the sif object on the last content chunk
    chunks = list(client.chat.completions.create(model="sifthinker", messages=body["messages"], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TRACE
    assert [c for c in chunks if c.choices][-1].model_extra["sif"]["answer"] == "red cube"
    assert stand_in.requests[-1]["stream"] is True
    # V2 on the transformer
    r = requests.post(f"{front}/v2/models/sifthinker/infer", timeout=60, json={"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [oa.encode_image(rgb)]},
        {"name": "question", "shape": [1], "datatype": "BYTES", "data": [QUESTION]}]})
    assert r.status_code == 200 and {o["name"]: o for o in r.json()["outputs"]}["answer"]["data"] == ["red cube"]


def test_transformer_enforces_limits_itself_and_maps_predictor_failures(front, stand_in):
    n = len(stand_in.requests)
    bad = oa.chat_request_body(QUESTION, random_image(), None, "sifthinker", top_p=0.3)
    r = requests.post(f"{front}/openai/v1/chat/completions", json=bad, timeout=60)
    assert r.status_code == 400 and "top_p" in r.json()["error"]["message"]
    r = requests.post(f"{front}/openai/v1/chat/completions", json=oa.chat_request_body(QUESTION, random_image(size=(600, 2)),
                      None, "sifthinker"), timeout=60)
    assert r.status_code == 400 and "aspect ratio" in r.json()["error"]["message"]
    assert len(stand_in.requests) == n  # refused before anything reached the predictor
    stand_in.refuse = (400, "This model's maximum context length is 8192 tokens")
    try:
        r = requests.post(f"{front}/openai/v1/chat/completions",
                          json=oa.chat_request_body(QUESTION, random_image(), None, "sifthinker"), timeout=60)
        assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
        stand_in.refuse = (500, "engine dead")
        r = requests.post(f"{front}/openai/v1/chat/completions",
                          json=oa.chat_request_body(QUESTION, random_image(), None, "sifthinker"), timeout=60)
        assert r.status_code == 502 and "engine dead" in r.json()["error"]["message"]
    finally:
        stand_in.refuse = None


def test_transformer_in_front_of_the_native_predictor(serving_server, tmp_path):
    """The same greedy text through the transformer as from the native predictor directly."""
    rgb, depth = random_image(3), random_image(4)
    with transformer(tmp_path, serving_server.url, serving_server.model_name) as front:
        body = oa.chat_request_body(QUESTION, rgb, depth, "sifthinker", max_tokens=10)
        via = requests.post(f"{front}/openai/v1/chat/completions", json=body, timeout=120)
        body["model"] = serving_server.model_name
        direct = requests.post(f"{serving_server.url}/openai/v1/chat/completions", json=body, timeout=120)
        assert via.status_code == direct.status_code == 200, via.text
        text = direct.json()["choices"][0]["message"]["content"]
        assert via.json()["choices"][0]["message"]["content"] == text != ""
        assert via.json()["sif"] == direct.json()["sif"] and via.json()["model"] == "sifthinker"
        t0 = time.monotonic()
        r = requests.post(f"{front}/openai/v1/chat/completions", timeout=120,
                          json=oa.chat_request_body(QUESTION, rgb, depth, "sifthinker", max_tokens=10, stream=True),
                          stream=True)
        events = [json.loads(ln[6:]) for ln in r.iter_lines(decode_unicode=True) if ln.startswith("data: {")]
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == text
        assert time.monotonic() - t0 < 60
