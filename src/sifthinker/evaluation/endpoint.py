"""Evaluate any OpenAI-compatible chat server: our KServe predictor's ``/openai/v1``, or vLLM serving a
baseline such as Qwen2.5-VL-7B.

Each item is one ``POST {base}/chat/completions`` carrying the full SIF prompt of
:func:`sifthinker.method.prompts.chat_messages` with its image parts filled by PNG ``data:`` URLs (every RGB
image, then every depth image), ``temperature`` 0 and ``max_tokens`` = ``eval.max_new_tokens``; a
server that adds no instruction of its own (vLLM) thus sees exactly the prompt the model was trained on,
and ours strips it again. The model name is ``model`` when given, else the first id of
``GET {base}/models``. ``$OPENAI_API_KEY``, when set, is sent as a bearer token.

At most ``eval.concurrency`` requests are in flight; each waits ``eval.request_timeout_s``. Timeouts,
connection errors, 5xx, 408 and 429 are retried ``eval.retries`` times with exponential backoff;
other 4xx mean the server will not take this item: no retry, and the item is recorded as refused with
the server's message (then skipped in scoring, saying why).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import requests

from sifthinker.data.chat_http import connection_problem, error_message, post_chat
from sifthinker.evaluation.inputs import EvalRequest, ItemError, Outcome
from sifthinker.method.prompts import chat_messages

__all__ = ["EndpointError", "EndpointGenerator", "base_url"]

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint cannot be used at all (unreachable, no model listed)."""


def base_url(url: str) -> str:
    """The API base (``.../v1``) from what a user may paste: the base, or the chat-completions URL."""
    u = url.strip().rstrip("/")
    for tail in ("/chat/completions", "/models"):
        u = u.removesuffix(tail)
    if not u.startswith(("http://", "https://")):
        raise EndpointError(f"endpoint {url!r} is not an http(s) URL")
    return u




class EndpointGenerator:
    """A generator (see :mod:`sifthinker.evaluation.inputs`) backed by an OpenAI-compatible server."""

    name = "endpoint"
    max_images = None  # the server decides; a refusal (4xx) is recorded on the item

    def __init__(self, url: str, *, model: str | None = None, concurrency: int = 4, timeout_s: float = 300.0,
                 retries: int = 2, max_new_tokens: int = 256, backoff_s: float = 0.5):
        self.url = base_url(url)
        self._model = model
        self.concurrency, self.timeout_s, self.retries = max(1, concurrency), timeout_s, max(0, retries)
        self.max_new_tokens, self.backoff_s = max_new_tokens, backoff_s
        self.batch_size = self.concurrency * 4  # requests handed over per call; results stream as they finish
        self._local = threading.local()
        key = os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):  # one connection pool per worker thread
            self._local.session = requests.Session()
            self._local.session.headers.update(self._headers)
        return self._local.session

    @property
    def model(self) -> str:
        """The served model name (asked from ``GET /models`` once when not given)."""
        if self._model is None:
            url = f"{self.url}/models"
            try:
                resp = self._session().get(url, timeout=min(self.timeout_s, 30.0))
            except requests.RequestException as e:
                raise EndpointError(f"cannot reach the endpoint: {connection_problem(e, url)}") from e
            if resp.status_code != 200:
                raise EndpointError(f"GET {url} answered {resp.status_code}: {error_message(resp)} (pass the model name)")
            try:
                self._model = str(resp.json()["data"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise EndpointError(f"GET {url} lists no model (pass the model name)") from e
        return self._model

    @property
    def fingerprint(self) -> str:
        return f"endpoint:{self.url}:{self.model}:{self.max_new_tokens}"

    def body(self, req: EvalRequest) -> dict[str, Any]:
        """The chat-completions request of one item (module docstring)."""
        from sifthinker.serving.openai_api import data_url

        rgb, depth = req.images()
        urls = iter([data_url(im) for im in (*rgb, *depth)])
        parts = [{"type": "image_url", "image_url": {"url": next(urls)}} if p["type"] == "image" else p
                 for p in chat_messages(req.question, n_images=len(rgb))[0]["content"]]
        return {"model": self.model, "messages": [{"role": "user", "content": parts}],
                "max_tokens": self.max_new_tokens, "temperature": 0}

    def ask(self, req: EvalRequest) -> Outcome:
        """One item, with retries (module docstring)."""
        r = post_chat(self._session(), f"{self.url}/chat/completions", self.body(req), timeout_s=self.timeout_s,
                      retries=self.retries, backoff_s=self.backoff_s)
        if r.refused:
            return ItemError(f"endpoint refused the item: {r.refused}")
        if r.failed is not None:
            log.warning("item %s: giving up after %d attempt(s): %s", req.item.id, self.retries + 1, r.failed)
            return ItemError(f"failed after {self.retries + 1} attempt(s): {r.failed}", transient=True)
        if r.content is None:
            return ItemError(f"endpoint answered {r.status} without choices[0].message.content")
        return r.content

    def stream(self, reqs: Sequence[EvalRequest]) -> Iterator[tuple[int, Outcome]]:
        """(position in ``reqs``, outcome) as each request finishes, ``concurrency`` at a time.

        Daemon worker threads, not a ThreadPoolExecutor: an interrupted run (Ctrl-C, an error) must not
        wait at exit for requests still in flight (up to ``timeout_s`` each). An exception inside a worker
        (an unreadable image) is raised here, after which the workers stop taking requests."""
        _ = self.model  # resolve the name once, before the workers start
        todo: queue.Queue[tuple[int, EvalRequest]] = queue.Queue()
        for i, r in enumerate(reqs):
            todo.put((i, r))
        done: queue.Queue[tuple[int, Outcome | BaseException]] = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i, r = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((i, self.ask(r)))
                except Exception as e:  # handed to the caller's thread, raised there
                    done.put((i, e))

        for n in range(min(self.concurrency, len(reqs))):
            threading.Thread(target=work, name=f"eval-endpoint-{n}", daemon=True).start()
        try:
            for _ in range(len(reqs)):
                i, out = done.get()
                if isinstance(out, BaseException):
                    raise out
                yield i, out
        finally:
            stop.set()

    def __call__(self, reqs: Sequence[EvalRequest]) -> list[Outcome]:
        out: list[Outcome | None] = [None] * len(reqs)
        for i, o in self.stream(reqs):
            out[i] = o
        return out  # type: ignore[return-value]
