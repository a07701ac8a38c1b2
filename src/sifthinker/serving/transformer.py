"""The SIF transformer's backend: an OpenAI-compatible predictor generates, this server does the rest.

On a GPU cluster the InferenceService's predictor is KServe's Hugging Face runtime with the vLLM backend
serving the merged model (OpenAI routes at ``/openai/v1``), and ``sifthinker serve --predictor-host``
runs in front of it as the KServe transformer. Requests reach the transformer on the same routes as the
native predictor, with the same parsing, limits, depth provider, ``sif`` object and drawing
(:class:`~sifthinker.serving.service.Service`); only generation is forwarded, as one chat-completions
request carrying the full SIF prompt of :func:`sifthinker.method.prompts.chat_messages` with every RGB image then
every depth image as data URLs (exactly what the model was trained on), greedy unless asked. An image is
forwarded as the client's own bytes where vLLM reads the same RGB pixels from them as this server does
(:func:`sifthinker.serving.images.read_image`), else re-encoded as PNG: re-encoding two 320x240 images
cost ~45 ms per request, a quarter of what vLLM takes to answer on the tiny model (docs/benchmarks.md).

The transformer checks each forwarded image by its header only (format, size, aspect ratio) and decodes
pixels only to draw or to make a depth image: vLLM decodes them anyway, and refuses corrupt pixel data
itself (a 400, passed on as below).

A request the predictor refuses (4xx) is refused with its message and status; a predictor that fails
(500, a reply that is not OpenAI's) is a 502. A predictor that is gone (connection refused or cut
mid-reply, its own 502/503/504) is a 503 with ``Retry-After``: the client may try again once it is back.
A predictor that hangs holds its connections open without replying: while calls are in flight it is
probed every ``serving.predictor_probe_s``, and a failed probe answers them 503 too. Readiness probes it
the same way, so the transformer is not ready while its predictor is away. The request deadline bounds
the call, and a cancelled request closes the connection (vLLM then aborts the generation).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import orjson

from sifthinker.method.prompts import chat_messages
from sifthinker.serving.batcher import Result
from sifthinker.serving.errors import RequestError, limit_error
from sifthinker.serving.images import data_url
from sifthinker.serving.limits import Limits
from sifthinker.serving.request import Decoded
from sifthinker.serving.service import Prepared


def predictor_base(url: str) -> str:
    """The predictor's OpenAI base: a URL ending in /v1 as it is, else KServe's ``<url>/openai/v1``."""
    u = url.rstrip("/")
    return u if u.endswith("/v1") else f"{u}/openai/v1"


def chat_body(d: Decoded, model: str) -> dict:
    """The predictor request: the SIF prompt with the images as data URLs (RGB images, then depth images),
    each the client's bytes where ``d.sources`` has them, else PNG."""
    images = (*d.images, *d.depth_images)
    sources = d.sources or [None] * len(images)
    urls = iter([src.data_url() if src is not None else data_url(im) for im, src in zip(images, sources, strict=True)])
    parts = [{"type": "image_url", "image_url": {"url": next(urls)}} if p["type"] == "image" else p
             for p in chat_messages(d.ask.question, n_images=len(d.images))[0]["content"]]
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": parts}],
                            "max_tokens": d.ask.max_tokens, "temperature": d.ask.temperature}
    if d.ask.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


_JSON = {"Content-Type": "application/json"}


class RemoteHandle:
    def __init__(self, loop: asyncio.AbstractEventLoop, stream: bool):
        self.future: asyncio.Future = loop.create_future()
        self.deltas: asyncio.Queue | None = asyncio.Queue() if stream else None
        self.task: asyncio.Task | None = None
        self._sent, self._raw = "", ""

    def cancel(self, why: str = "cancelled") -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def add(self, piece: str) -> None:
        """Forward new text, whitespace at the ends held back (the final text is stripped)."""
        self._raw += piece
        text = self._raw.strip()
        if self.deltas is not None and text.startswith(self._sent) and len(text) > len(self._sent):
            self.deltas.put_nowait(text[len(self._sent):])
            self._sent = text

    def finish(self, outcome: Result | Exception) -> None:
        if not self.future.done():
            if isinstance(outcome, Exception):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)
        if self.deltas is not None:
            self.deltas.put_nowait(None)


class RemoteBackend:
    kind = "transformer"
    forwards_images = True  # request.decode: the predictor decodes what it is sent as-is

    def __init__(self, url: str, model: str, limits: Limits):
        self.base, self.model, self.limits = predictor_base(url), model, limits
        self._client = None
        self.ready = False
        self._in_flight: set[RemoteHandle] = set()
        self._watcher: asyncio.Task | None = None

    def load(self) -> None:
        self.ready = True  # the predictor's own readiness gates the InferenceService

    def prepare(self, d: Decoded) -> Prepared:
        return Prepared(d, chat_body(d, self.model))

    def submit(self, p: Prepared, deadline: float, loop: asyncio.AbstractEventLoop, on_start: Any) -> RemoteHandle:
        h = RemoteHandle(loop, bool(p.decoded.ask.stream))
        h.task = loop.create_task(self._call(h, p.payload, deadline, on_start))
        self._in_flight.add(h)
        if self._watcher is None:
            self._watcher = loop.create_task(self._watch())
        return h

    async def probe(self) -> str | None:
        """None when the predictor answers its OpenAI ``/models`` within ``predictor_probe_s``, else why not."""
        import httpx

        try:
            r = await self._http().get(f"{self.base}/models", timeout=self.limits.predictor_probe_s)
        except httpx.HTTPError as e:  # refused, reset, or no answer in time (hung)
            return f"the predictor at {self.base} is unavailable ({type(e).__name__})"
        return None if r.status_code == 200 else f"the predictor at {self.base} is not ready (HTTP {r.status_code})"

    async def _watch(self) -> None:
        """While calls are in flight, probe the predictor; when it fails, answer them all 503 (a hung predictor
        would otherwise hold them until their deadline)."""
        try:
            while self._in_flight:
                await asyncio.sleep(self.limits.predictor_probe_s)
                problem = await self.probe() if self._in_flight else None
                if problem:
                    for h in list(self._in_flight):
                        h.finish(unavailable(problem))
                        h.cancel()
        finally:
            self._watcher = None

    def close(self) -> None:
        self.ready = False

    def _http(self):
        import httpx

        if self._client is None:  # created on the server's event loop, on first use
            self._client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=256))
        return self._client

    async def _call(self, h: RemoteHandle, body: dict, deadline: float, on_start: Any) -> None:
        import httpx

        on_start()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, deadline - t0)):
                # orjson: httpx's json= runs the standard library's encoder over the ~0.3 MB of base64 per
                # image, ~5 ms a request here (docs/benchmarks.md)
                async with self._http().stream("POST", f"{self.base}/chat/completions", content=orjson.dumps(body),
                                               headers=_JSON) as r:
                    if r.status_code != 200:
                        raw = await r.aread()
                        raise _refusal(r.status_code, raw)
                    if body.get("stream"):
                        result = await self._read_stream(h, r)
                    else:
                        result = _result(json.loads(await r.aread()))
                    h.finish(result)
        except TimeoutError:
            h.finish(limit_error("request_timeout_s", "the request took longer than the server's request timeout",
                                 408))
        except RequestError as e:
            h.finish(e)
        except httpx.TransportError as e:  # refused, reset or cut mid-reply: the predictor is gone (for now)
            h.finish(unavailable(f"the predictor at {self.base} is unavailable ({type(e).__name__})"))
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
            h.finish(RequestError(f"the predictor at {self.base} failed ({type(e).__name__})", 502,
                                  code="predictor_error"))
        except asyncio.CancelledError:
            h.finish(RequestError("the request was cancelled", 499, code="cancelled"))
        finally:
            self._in_flight.discard(h)

    @staticmethod
    async def _read_stream(h: RemoteHandle, r: Any) -> Result:
        finish, usage = "length", {}
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            ev = json.loads(data)
            if "error" in ev:
                raise _refusal(400, json.dumps(ev).encode())
            usage = ev.get("usage") or usage
            for c in ev.get("choices") or []:
                h.add((c.get("delta") or {}).get("content") or "")
                finish = c.get("finish_reason") or finish
        return Result(h._raw.strip(), usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), finish)


def _result(reply: dict) -> Result:
    choice = reply["choices"][0]
    usage = reply.get("usage") or {}
    return Result((choice["message"].get("content") or "").strip(), usage.get("prompt_tokens", 0),
                  usage.get("completion_tokens", 0), choice.get("finish_reason") or "stop")


def unavailable(problem: str) -> RequestError:
    """503: the predictor is away; ``Retry-After`` tells the client when to try again."""
    return RequestError(f"{problem}; retry later", 503, code="predictor_unavailable")


def _refusal(status: int, raw: bytes) -> RequestError:
    try:
        err = json.loads(raw).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = None
    msg = " ".join(str(msg or raw[:300].decode("utf-8", "replace")).split())[:300]
    if 400 <= status < 500:
        keep = status in (400, 408, 413, 422, 429)  # the client's problem, as the predictor said
        return RequestError(f"the predictor refused the request: {msg}", status if keep else 400,
                            code="predictor_refused")
    if status in (502, 503, 504):  # not ready, shutting down, or its gateway cannot reach it
        return unavailable(f"the predictor is unavailable (HTTP {status}: {msg})")
    return RequestError(f"the predictor failed (HTTP {status}): {msg}", 502, code="predictor_error")
