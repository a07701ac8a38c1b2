"""The VLM narrator (spec 2, step 5, "forward inference"): a strong VLM writes each step's text.

Any OpenAI-compatible chat endpoint (vLLM, a hosted API, our own server's ``/openai/v1``) gets one
request per item: a system prompt with the SIF format and an exemplar trace, then the question, its
ground-truth answer and, for every frame of the trajectory in forward order, the frame's boxes with
their depths and the image with those boxes drawn in green. The reply's fenced block is the trace.

Every reply is validated before its texts are used: it must be a strictly valid SIF trace, with one
area per frame, each holding the frame's boxes (to 3 decimals), and its answer must state the ground
truth. The builder then renders the record's trace from our boxes, depths and answer with the VLM's
texts. An invalid reply is asked again (``tries`` in all); transport failures (timeouts, connection
errors, 408/429/5xx) are retried ``retries`` times with exponential backoff within each try; another
4xx means the endpoint will not take the item, which is rejected at once. A rejected item's reason is
the last problem found. ``narrate_many`` narrates a shard's items with at most ``concurrency``
requests in flight. ``$OPENAI_API_KEY``, when set, is sent as a bearer token.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from PIL import Image, ImageDraw

from sifthinker.data.chat_http import post_chat
from sifthinker.data.narrator import NarrationError, NarrationInput
from sifthinker.method import trace as sif_trace
from sifthinker.method.answers import normalize, score_answer

log = logging.getLogger(__name__)

_FENCE_RE = re.compile(r"```[a-zA-Z]*\n?(.*?)```", re.DOTALL)
_ROLE = {"full": "the whole image", "distractor": "a wrong guess: this region does not hold what the question "
         "asks about", "merged": "the area around all the evidence", "expanded": "closer around the evidence",
         "gt": "the evidence itself"}

SYSTEM_PROMPT = """You write the reasoning of a visual question answering example in the SIF format: the \
reasoning starts from the whole image and progressively focuses on the regions that answer the question, \
alternating a focused region with a short analysis of it.

You are given the question, its correct answer, and the focused regions in order. Each region is one or \
more normalised bounding boxes [x1, y1, x2, y2] (0..1 across the width and the height) with the mean \
relative depth inside (0 = nearest to the camera, 1 = farthest), and the image with the region drawn as \
green boxes. For each region, in the given order, write one or two sentences: what the region shows, its \
depth when it matters, and why the focus moves on. A region described as a wrong guess does not contain \
what the question asks about: say so, then move on. Keep every box and depth exactly as given, 3 decimals \
at most. After the last region, give the final answer.

Reply with the trace only, wrapped in three backticks, in exactly this format:
```
<think>
<area>[{"bbox_2d":[x1,y1,x2,y2],"depth":d}]</area>
<text>analysis of this region</text>
... one <area>/<text> pair per given region ...
</think>
<answer>the final answer</answer>
```

Example, for "Which is closer to the camera, the red cube or the blue sphere?" with answer "red cube":
```
<think>
<area>[{"bbox_2d":[0,0,1,1],"depth":0.41}]</area>
<text>The question compares the distances of the red cube and the blue sphere. I first look over the whole \
scene: several objects stand on a floor.</text>
<area>[{"bbox_2d":[0.62,0.08,0.95,0.4],"depth":0.8}]</area>
<text>This far corner holds only a yellow cylinder, neither of the two objects, so I look elsewhere.</text>
<area>[{"bbox_2d":[0.05,0.3,0.6,0.85],"depth":0.33}]</area>
<text>Here are both objects: the cube in front on the left, the sphere further back.</text>
<area>[{"bbox_2d":[0.11,0.38,0.43,0.79],"depth":0.27},{"bbox_2d":[0.4,0.35,0.55,0.52],"depth":0.52}]</area>
<text>The red cube is at depth 0.27 and the blue sphere at 0.52, so the cube is closer.</text>
</think>
<answer>red cube</answer>
```"""


def _data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def draw_frame(image: Image.Image, boxes: tuple, max_side: int) -> Image.Image:
    """The image (downscaled to ``max_side``) with the frame's normalised boxes drawn in green."""
    img = image.convert("RGB")
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    else:
        img = img.copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for x1, y1, x2, y2 in boxes:
        draw.rectangle((x1 * w, y1 * h, x2 * w - 1, y2 * h - 1), outline=(0, 255, 0), width=max(2, round(min(w, h) / 150)))
    return img




class VLMNarrator:
    """Narration by an OpenAI-compatible chat endpoint, validated (module docstring)."""

    needs_image = True

    def __init__(self, endpoint: str, model: str | None = None, concurrency: int = 8, timeout_s: float = 120.0,
                 retries: int = 2, tries: int = 3, max_tokens: int = 1024, max_side: int = 768,
                 backoff_s: float = 0.5):
        self.url = endpoint.strip().rstrip("/").removesuffix("/chat/completions")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"narrator endpoint {endpoint!r} is not an http(s) URL")
        self._model, self.concurrency, self.timeout_s = model, max(1, concurrency), timeout_s
        self.retries, self.tries, self.max_tokens, self.max_side = max(0, retries), max(1, tries), max_tokens, max_side
        self.backoff_s = backoff_s
        key = os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._local = threading.local()
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, o: Any) -> VLMNarrator:
        if not o.endpoint:
            raise ValueError("the VLM narrator needs an endpoint (data.vlm.endpoint or --vlm-endpoint)")
        return cls(o.endpoint, o.model, o.concurrency, o.timeout_s, o.retries, o.tries, o.max_tokens, o.max_side)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers.update(self._headers)
        return self._local.session

    @property
    def model(self) -> str:
        with self._lock:
            if self._model is None:
                try:
                    resp = self._session().get(f"{self.url}/models", timeout=min(self.timeout_s, 30.0))
                    self._model = str(resp.json()["data"][0]["id"])
                except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as e:
                    raise NarrationError(f"cannot list the models of {self.url} (give the model name): "
                                         f"{type(e).__name__}") from e
            return self._model

    def messages(self, item: NarrationInput) -> list[dict]:
        image = item.facts.get("image")
        if image is None:
            raise NarrationError("the VLM narrator needs the item's image")
        parts: list[dict] = [{"type": "text", "text": f"Question: {item.question}\nCorrect answer: {item.answer}\n"
                                                      f"The {len(item.steps)} focused regions, in order:"}]
        for i, step in enumerate(item.steps, 1):
            boxes = [{"bbox_2d": list(b), "depth": d} for b, d in zip(step.boxes, step.depths, strict=True)]
            parts.append({"type": "text", "text": f"Region {i} ({_ROLE.get(step.kind, step.kind)}): "
                                                  f"{json.dumps(boxes)}, drawn in green below."})
            parts.append({"type": "image_url", "image_url": {"url": _data_url(draw_frame(image, step.boxes,
                                                                                         self.max_side))}})
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": parts}]

    def _post(self, body: dict) -> str:
        """The reply's text; NarrationError when the endpoint refuses or keeps failing."""
        r = post_chat(self._session(), f"{self.url}/chat/completions", body, timeout_s=self.timeout_s,
                      retries=self.retries, backoff_s=self.backoff_s)
        if r.refused:
            raise NarrationError(f"endpoint refused the item: {r.refused}")
        if r.failed is not None:
            raise NarrationError(f"endpoint failed after {self.retries + 1} attempt(s): {r.failed}")
        return r.content or ""  # no content (garbage) is judged, and asked again, like any invalid reply

    @staticmethod
    def check(reply: str, item: NarrationInput) -> list[str]:
        """The step texts of a valid reply; NarrationError naming the first problem otherwise."""
        fenced = _FENCE_RE.findall(reply)
        text = (fenced[0] if fenced else reply).strip()
        try:
            parsed = sif_trace.parse(text)
        except sif_trace.TraceFormatError as e:
            raise NarrationError(f"invalid trace: {e}") from e
        if len(parsed.steps) != len(item.steps):
            raise NarrationError(f"the trace has {len(parsed.steps)} areas for {len(item.steps)} regions")
        for i, (got, want) in enumerate(zip(parsed.steps, item.steps, strict=True), 1):
            a = sorted(b.xyxy() for b in got.boxes)
            b = sorted(want.boxes)
            if len(a) != len(b) or any(abs(x - y) > 0.0015 for p, q in zip(a, b, strict=True)
                                       for x, y in zip(p, q, strict=True)):
                raise NarrationError(f"area {i} does not hold region {i}'s boxes")
        gt, said = normalize(item.answer), normalize(parsed.answer)
        if not (re.search(rf"(?<!\w){re.escape(gt)}(?!\w)", said) or score_answer(parsed.answer, item.answer) > 0):
            raise NarrationError(f"the answer {parsed.answer[:60]!r} does not state the ground truth {item.answer!r}")
        return [s.text for s in parsed.steps]

    def narrate(self, item: NarrationInput) -> list[str]:
        body = {"model": self.model, "messages": self.messages(item), "max_tokens": self.max_tokens,
                "temperature": 0.7}
        problem = ""
        for _ in range(self.tries):
            try:
                return self.check(self._post(body), item)
            except NarrationError as e:
                if str(e).startswith(("endpoint refused", "endpoint failed")):
                    raise
                problem = str(e)
        raise NarrationError(f"no valid trace in {self.tries} tries; last: {problem}")

    def narrate_many(self, items: list[NarrationInput]) -> list[list[str] | NarrationError]:
        """Every item's texts or its NarrationError, in order, ``concurrency`` requests at a time."""

        def one(x: NarrationInput) -> list[str] | NarrationError:
            try:
                return self.narrate(x)
            except NarrationError as e:
                return e

        if not items:
            return []
        with ThreadPoolExecutor(min(self.concurrency, len(items)), thread_name_prefix="vlm-narrator") as pool:
            return list(pool.map(one, items))
