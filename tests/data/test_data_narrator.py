"""The VLM narrator against real HTTP servers speaking the OpenAI chat protocol.

``ScriptedChatServer`` is a FAKE endpoint (a real local HTTP server whose replies follow a script: good,
slow, failing, refusing or garbage); beside it, the project's own model server (``sifthinker serve``, a
real OpenAI-compatible endpoint) shows how a server that will not take the request is handled.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import send_json
from PIL import Image

from sifthinker.data.build import build_records, load_records
from sifthinker.data.narrator import NarrationError, NarrationInput
from sifthinker.data.sources import SourceItem
from sifthinker.data.trajectory import TrajectoryConfig, build_trajectory
from sifthinker.data.vlm_narrator import VLMNarrator
from sifthinker.method import trace as sif_trace
from sifthinker.serving.process import free_port

_REGION_RE = re.compile(r"^Region \d+ \([^)]*\): (\[.*\]), drawn in green below\.$", re.DOTALL)


def good_reply(body: dict, answer_suffix: str = "") -> str:
    """A valid trace for the request's regions (their boxes and depths read back from the request)."""
    regions = [json.loads(m.group(1)) for p in body["messages"][1]["content"] if p["type"] == "text"
               if (m := _REGION_RE.match(p["text"]))]
    answer = re.search(r"Correct answer: (.*)\n", body["messages"][1]["content"][0]["text"]).group(1)
    steps = tuple(sif_trace.Step(tuple(sif_trace.Box(*b["bbox_2d"], depth=b["depth"]) for b in boxes),
                                 f"Scripted analysis of region {i}.") for i, boxes in enumerate(regions, 1))
    return "Here it is:\n```\n" + sif_trace.render(sif_trace.Trace(steps, answer + answer_suffix)) + "\n```"


class ScriptedChatServer:
    """FAKE OpenAI-compatible endpoint on a free port: each chat request takes the next behaviour of
    ``script`` (then ``default``): good, slow (sleeps past the client's timeout, then answers), 500,
    400, garbage (prose, no trace), nochoices (JSON without choices), wrongboxes, wronganswer."""

    def __init__(self, script: list[str] | None = None, default: str = "good", delay_s: float = 0.0):
        self.script, self.default, self.delay_s = list(script or []), default, delay_s
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                send_json(self, status, payload)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "scripted-vlm", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    what = server.script.pop(0) if server.script else server.default
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    if what == "slow":
                        time.sleep(1.5)
                    if what == "500":
                        return self._send(500, {"error": {"message": "overloaded"}})
                    if what == "400":
                        return self._send(400, {"error": {"message": "this model takes no images"}})
                    if what == "nochoices":
                        return self._send(200, {"id": "x", "object": "chat.completion"})
                    text = {"garbage": "I am not sure what you want me to do.",
                            "wrongboxes": good_reply(body).replace('"bbox_2d":[0,0,1,1]', '"bbox_2d":[0,0,0.5,1]'),
                            "wronganswer": re.sub(r"<answer>.*</answer>", "<answer>something else</answer>", good_reply(body))}.get(what) or good_reply(body)
                    self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": text}}]})
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def make(*args, **kwargs) -> ScriptedChatServer:
        servers.append(ScriptedChatServer(*args, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def item(question: str = "Which is closer, the red cube or the blue sphere?", answer: str = "red cube",
         seed: int = 0) -> NarrationInput:
    depth = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (120, 1))
    traj = build_trajectory([(20.0, 30.0, 50.0, 60.0), (100.0, 70.0, 130.0, 100.0)], depth,
                            np.random.default_rng(seed), TrajectoryConfig(distractor_prob=0.0))
    return NarrationInput(question, answer, "depth", ["red cube", "blue sphere"], traj.steps,
                          facts={"image": Image.new("RGB", (160, 120), "gray")})


def narrator(url: str, **kw) -> VLMNarrator:
    return VLMNarrator(url, **{"timeout_s": 0.5, "retries": 2, "tries": 3, "backoff_s": 0.01, **kw})


def test_a_good_reply_gives_one_text_per_frame_and_the_request_is_the_spec(server):
    s = server()
    texts = narrator(s.url).narrate(item())
    assert texts == [f"Scripted analysis of region {i}." for i in range(1, 5)]
    body = s.requests[0]
    assert body["model"] == "scripted-vlm"  # asked from GET /models
    assert "<area>" in body["messages"][0]["content"] and "Example" in body["messages"][0]["content"]
    parts = body["messages"][1]["content"]
    assert "Correct answer: red cube" in parts[0]["text"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 4 and all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images)


@pytest.mark.parametrize("script, requests", [
    (["garbage"], 2),             # an invalid reply is asked again
    (["nochoices", "wrongboxes"], 3),
    (["500", "500"], 3),          # server errors are retried with backoff within one try
    (["slow"], 2),                # a timeout too
])
def test_failures_are_retried_until_a_valid_reply(server, script, requests):
    s = server(script)
    assert narrator(s.url).narrate(item()) == [f"Scripted analysis of region {i}." for i in range(1, 5)]
    assert len(s.requests) == requests


@pytest.mark.parametrize("default, reason, requests", [
    ("garbage", "no valid trace in 3 tries; last: invalid trace:", 3),
    ("wrongboxes", "area 1 does not hold region 1's boxes", 3),
    ("wronganswer", "does not state the ground truth 'red cube'", 3),
    ("500", "endpoint failed after 3 attempt(s): HTTP 500: overloaded", 3),
    ("slow", "endpoint failed after 3 attempt(s): no answer within 0.5s", 3),
    ("400", "endpoint refused the item: HTTP 400: this model takes no images", 1),  # never retried
])
def test_persistent_failures_reject_the_item_with_its_reason(server, default, reason, requests):
    s = server(default=default)
    with pytest.raises(NarrationError, match=re.escape(reason)):
        narrator(s.url).narrate(item())
    assert len(s.requests) == requests


def test_concurrency_is_bounded(server):
    s = server(delay_s=0.2)
    out = narrator(s.url, concurrency=2, timeout_s=5).narrate_many([item(seed=i) for i in range(6)])
    assert all(isinstance(t, list) for t in out) and len(s.requests) == 6
    assert s.max_in_flight == 2


def test_a_build_narrated_by_a_vlm_reports_rejected_items(server, tmp_path):
    """Three items through the builder: the second one's endpoint keeps sending garbage."""
    s = server(["good", "garbage", "garbage", "garbage", "good"])

    class Three:
        name = "handmade"

        def items(self, seed):
            depth = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (100, 1))
            for k in range(3):
                yield SourceItem(uid=f"i{k}", image=Image.new("RGB", (200, 100), "white"), depth=depth,
                                 question=f"Is there a red cube number {k}?", answer="yes", answer_type="yes_no",
                                 category="existence", gt_boxes_px=[(10.0 + k, 10, 30, 20)],
                                 evidence_names=["red cube"], dataset="handmade")

    summary = build_records(Three(), 3, 0, tmp_path / "d", narrator=narrator(s.url, concurrency=1),
                            progress=False)
    assert [r["id"] for r in load_records(tmp_path / "d")] == ["i0", "i2"]
    rejection = json.loads((tmp_path / "d" / "rejections.jsonl").read_text())
    assert rejection["id"] == "i1" and rejection["reason"].startswith("narration failed: no valid trace in 3 tries")
    assert summary.num_records == 2
    rec = load_records(tmp_path / "d")[0]
    # the VLM's texts, our boxes, depths and answer
    assert "Scripted analysis of region 1." in rec["messages"][1]["content"] and rec["messages"][1]["content"].endswith(
        "<answer>yes</answer>")


def test_the_projects_own_server_refuses_and_the_item_is_rejected(serving_server):
    """The real thing: our KServe model server takes exactly one RGB and one depth image per request, so a
    narration request (one image per frame) is refused with a 4xx, never retried, and named."""
    n = VLMNarrator(f"{serving_server.url}/openai/v1", timeout_s=120, retries=1, tries=2)
    with pytest.raises(NarrationError, match=r"endpoint refused the item: HTTP 4\d\d"):
        n.narrate(item())
    assert n.model == serving_server.model_name  # the model was listed by the server itself
