"""Hard limits and the attacks found against the predictor, each a regression test on a real server process.

Every limit answers a 4xx JSON error naming ``serving.<limit>``; nothing here may produce a 5xx, hang the
server or kill it (the last test of the module checks it is alive and answering).
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.server
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
from helpers import LIMITED_SERVING, start_serving
from PIL import Image

from sifthinker.serving import openai_api as oa
from sifthinker.serving.errors import RequestError
from sifthinker.serving.images import decode_image_url
from sifthinker.serving.limits import Limits

QUESTION = "Which is closer, the red cube or the blue sphere?"


@pytest.fixture(scope="module")
def srv(limited_server):
    return limited_server


def _img(w=64, h=48, mode="RGB", seed=0) -> Image.Image:
    if mode != "RGB":
        return Image.new(mode, (w, h))
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _chat(srv, body, **kw):
    return requests.post(f"{srv.url}/openai/v1/chat/completions", json=body, timeout=kw.pop("timeout", 60), **kw)


def _body(srv, question=QUESTION, images=None, **params):
    images = images or [_img(), _img(seed=1)]
    content = [{"type": "text", "text": question}]
    content += [{"type": "image_url", "image_url": {"url": im if isinstance(im, str) else oa.data_url(im)}}
                for im in images]
    return {"model": srv.model_name, "messages": [{"role": "user", "content": content}], **params}


def _limit_error(r, status: int, limit: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["limit"] == limit and f"serving.{limit}" in err["message"], err
    return err


def test_body_size_is_refused_before_it_is_read(srv):
    big = b'{"messages": "' + b"x" * (LIMITED_SERVING["max_body_bytes"] + 10) + b'"}'
    r = requests.post(f"{srv.url}/openai/v1/chat/completions", data=big, timeout=60,
                      headers={"Content-Type": "application/json"})
    _limit_error(r, 413, "max_body_bytes")
    # chunked, without a Content-Length: cut off while streaming in
    r = requests.post(f"{srv.url}/v2/models/{srv.model_name}/infer", data=iter([big[i:i + 65536]
                      for i in range(0, len(big), 65536)]), timeout=60)
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"


def test_image_count_pixels_bombs_and_aspect_ratio(srv):
    _limit_error(_chat(srv, _body(srv, images=[_img()] * 6)), 400, "max_images")
    _limit_error(_chat(srv, _body(srv, images=[_img(1001, 1000, mode="L"), _img()])), 413, "max_image_pixels")
    # a 13000x13000 1-bit PNG: ~20 KB on the wire, 169 M pixels (just under Pillow's own bomb limit)
    bomb = _png(_img(13000, 13000, mode="1"))
    assert len(bomb) < 64 * 1024
    t0 = time.monotonic()
    err = _limit_error(_chat(srv, _body(srv, images=["data:image/png;base64," + base64.b64encode(bomb).decode()])),
                       413, "max_image_pixels")
    assert "13000x13000" in err["message"] and time.monotonic() - t0 < 10  # refused from the header, not decoded
    r = _chat(srv, _body(srv, images=[_img(600, 2, mode="L")]))  # aspect ratio 300 > 200: Qwen's resize would raise
    assert r.status_code == 400 and "aspect ratio" in r.json()["error"]["message"], r.text


def test_token_budget_question_length_and_prompt_tokens(srv):
    _limit_error(_chat(srv, _body(srv, max_tokens=LIMITED_SERVING["max_tokens_limit"] + 1)), 400, "max_tokens_limit")
    _limit_error(_chat(srv, _body(srv, question="why " * 600)), 400, "max_question_chars")
    words = " ".join(f"w{i}" for i in range(300))  # ~1,900 characters, far more tokens than fit in 700
    err = _limit_error(_chat(srv, _body(srv, question=words, max_tokens=4)), 400, "max_prompt_tokens")
    assert "tokens" in err["message"] and "context" in err["message"]


def test_a_huge_question_is_refused_at_once_and_never_blocks_others(srv):
    """Was: a 1 MB question ran for minutes and blocked every request; 50 MB took 10 GB."""
    q = "where " * (900_000 // 6)  # ~900 KB: under the body limit, far over the question limit
    health: list[float] = []

    def probe():
        for _ in range(10):
            t = time.monotonic()
            requests.get(f"{srv.url}/v2/health/ready", timeout=30)
            health.append(time.monotonic() - t)

    t0 = time.monotonic()
    th = threading.Thread(target=probe)
    th.start()
    r = _chat(srv, _body(srv, question=q))
    th.join()
    _limit_error(r, 400, "max_question_chars")
    assert time.monotonic() - t0 < 20 and max(health) < 5  # hang guards, not speed tests
    r = requests.post(f"{srv.url}/openai/v1/chat/completions", data=b"x" * (50 * 1024 * 1024), timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("route", ["openai", "v2", "v1"])
def test_deeply_nested_json_is_a_400(srv, route):
    url = {"openai": f"{srv.url}/openai/v1/chat/completions", "v2": f"{srv.url}/v2/models/{srv.model_name}/infer",
           "v1": f"{srv.url}/v1/models/{srv.model_name}:predict"}[route]
    for depth in (40, 100_000):
        r = requests.post(url, data=b"[" * depth + b"]" * depth, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 400, r.text
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}
    node = body
    for _ in range(50):
        node["x"] = {}
        node = node["x"]
    assert requests.post(url, json=body, timeout=60).status_code == 400


def _v2_binary(question=b"q?", extra=b"", declared=None, header=None):
    def bytes_tensor(*values):
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)

    img = bytes_tensor(_png(_img()))
    q = bytes_tensor(question)
    head = {"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": declared or len(img)}},
        {"name": "question", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(q)}}],
        "parameters": {"max_tokens": 2}}
    js = json.dumps(head).encode()
    return js + img + q + extra, {"Inference-Header-Content-Length": header or str(len(js)),
                                  "Content-Type": "application/octet-stream"}


@pytest.mark.parametrize(("case", "message"), [
    ("header abc", "must be a byte count"),
    ("header too long", "body has only"),
    ("declared too large", "only"),
    ("bytes left over", "belong to no input"),
    ("element past its size", "runs past binary_data_size"),
])
def test_v2_binary_extension_mistakes_are_400(srv, case, message):
    body, headers = _v2_binary()
    if case == "header abc":
        headers["Inference-Header-Content-Length"] = "abc"
    elif case == "header too long":
        headers["Inference-Header-Content-Length"] = str(len(body) + 5)
    elif case == "declared too large":
        body, headers = _v2_binary(declared=10**6)
    elif case == "bytes left over":
        body, headers = _v2_binary(extra=b"trailing")
    elif case == "element past its size":
        js_len = int(headers["Inference-Header-Content-Length"])
        body = body[:js_len] + (10**6).to_bytes(4, "little") + body[js_len + 4:]
    r = requests.post(f"{srv.url}/v2/models/{srv.model_name}/infer", data=body, headers=headers, timeout=60)
    assert r.status_code == 400 and message in r.json()["error"], r.text
    good, headers = _v2_binary()
    r = requests.post(f"{srv.url}/v2/models/{srv.model_name}/infer", data=good, headers=headers, timeout=60)
    assert r.status_code == 200, r.text  # raw PNG bytes, one image (depth from the provider)


def test_request_timeout_is_a_408_plain_and_streamed(tiny_model_dir, tmp_path):
    """A server whose timeout has passed before any request is prepared: the 408 must not depend on how
    fast this machine generates (600 tokens of the tiny model can take under the shared server's 1.5 s)."""
    with start_serving(tiny_model_dir, tmp_path / "srv", {**LIMITED_SERVING, "request_timeout_s": 1e-6}) as s:
        t0 = time.monotonic()
        _limit_error(_chat(s, _body(s, max_tokens=600)), 408, "request_timeout_s")
        assert time.monotonic() - t0 < 30  # answered, not hung until a client timeout
        # streamed: refused before the first event, so as a plain 408 in the same error shape
        _limit_error(_chat(s, _body(s, max_tokens=600, stream=True), stream=True), 408, "request_timeout_s")


def test_a_full_queue_is_a_429_and_nothing_is_a_5xx(srv):
    with concurrent.futures.ThreadPoolExecutor(14) as pool:
        codes = list(pool.map(lambda _: _chat(srv, _body(srv, max_tokens=20)), range(14)))
    statuses = sorted(r.status_code for r in codes)
    # 408: a request queued behind the others past the 1.5 s request timeout; never a 5xx
    assert set(statuses) <= {200, 408, 429} and 429 in statuses and 200 in statuses, statuses
    busy = next(r for r in codes if r.status_code == 429)
    err = busy.json()["error"]
    assert err["limit"] == "max_queue" and err["type"] == "rate_limit_error"
    assert busy.headers["Retry-After"] == "5"  # serving.retry_after_s


def test_abandoned_requests_stop_generating_and_the_loop_stays_free(serving_server):
    """Was: an abandoned request kept generating (no cancellation)."""
    from prometheus_client.parser import text_string_to_metric_families

    def tokens():
        text = requests.get(f"{serving_server.url}/metrics", timeout=30).text
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "sifthinker_generated_tokens_total")

    before = tokens()
    body = oa.chat_request_body(QUESTION, _img(), _img(seed=1), serving_server.model_name, max_tokens=3000)
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.post(f"{serving_server.url}/openai/v1/chat/completions", json=body, timeout=0.6)
    ready = requests.get(f"{serving_server.url}/v2/health/ready", timeout=30)
    assert ready.status_code == 200 and time.monotonic() - t0 < 5  # the event loop answers meanwhile
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the cancelled row is counted when its batch ends
        time.sleep(0.5)
        if tokens() > before:
            break
    assert 0 < tokens() - before < 1500  # 3000 tokens without cancellation


def test_remote_images_are_fetched_only_from_allowed_prefixes(tmp_path):
    png = _png(_img(32, 24))
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            if self.path == "/img/redirect.png":
                self.send_response(302)
                self.send_header("Location", "/img/a.png")
                self.end_headers()
                return
            body = png if self.path == "/img/a.png" else b"\x89PNG" + b"0" * 5000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        allow = Limits(image_url_allow=(f"{base}/img/",), max_body_bytes=4096)
        assert decode_image_url(f"{base}/img/a.png", "image 1", limits=allow).size == (32, 24)
        with pytest.raises(RequestError, match="does not fetch remote images"):
            decode_image_url(f"{base}/img/a.png", "image 1")  # no allow-list: never fetched
        with pytest.raises(RequestError, match="does not fetch remote images"):
            decode_image_url(f"{base}/other/a.png", "image 1", limits=allow)
        with pytest.raises(RequestError, match="HTTP 302"):
            decode_image_url(f"{base}/img/redirect.png", "image 1", limits=allow)  # redirects are not followed
        with pytest.raises(RequestError, match="serving.max_body_bytes"):
            decode_image_url(f"{base}/img/big.png", "image 1", limits=allow)
        assert hits == ["/img/a.png", "/img/redirect.png", "/img/big.png"]
    finally:
        httpd.shutdown()


def test_the_server_is_alive_and_answers_after_all_of_it(srv):
    assert srv.proc.poll() is None
    r = _chat(srv, _body(srv, max_tokens=3))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    assert "Traceback" not in srv.log.read_text()


# SIGTERM during a long generation: test_serving.py::test_serve_cli_resolves_a_registry_alias_and_answers_to_one_set_of_names
# (it ends its own server that way, which saves starting one more here).
