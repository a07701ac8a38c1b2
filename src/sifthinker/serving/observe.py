"""Prometheus metrics, structured request logs and the outermost guard of the serving app.

:class:`Guard` is a plain ASGI middleware around the whole app (KServe's routes included). Per request it

* refuses a body larger than ``max_body_bytes`` (413) from ``Content-Length`` before reading, or as soon as
  the streamed body passes the limit (:class:`BodyTooLarge`, raised from ``receive``);
* turns anything that escaped the handlers into a JSON 500 (counted and logged: it is a bug);
* counts the request by route and status, times it, and writes one JSON log line
  (``sifthinker.serving.access``) with what the handler recorded in ``scope["state"]["sif"]``: never
  a payload (no images, no question text).

The metrics live in the default registry, which KServe serves at ``GET /metrics``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from sifthinker.serving.errors import RequestError

access_log = logging.getLogger("sifthinker.serving.access")
log = logging.getLogger(__name__)

_ROUTES = [
    (re.compile(r"^/openai/v1/chat/completions$"), "openai_chat"),
    (re.compile(r"^/openai/v1/models$"), "openai_models"),
    (re.compile(r"^/v2/models/.+/infer$"), "v2_infer"),
    (re.compile(r"^/v1/models/.+:predict$"), "v1_predict"),
    (re.compile(r"^/(v2/)?health/|^/v2/models/[^/]+/ready$|^/v1/models/[^/:]+$|^/$"), "health"),
    (re.compile(r"^/metrics$"), "metrics"),
]


def route_label(path: str) -> str:
    """A bounded label for a path (a fuzzer must not create a time series per path)."""
    return next((label for rx, label in _ROUTES if rx.search(path)), "other")


class Metrics:
    """The server's Prometheus metrics (one instance per process: the default registry refuses twins)."""

    _instance: Metrics | None = None

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("sifthinker_requests", "Requests by route and HTTP status.", ["route", "status"])
        self.latency = Histogram("sifthinker_request_seconds", "Request latency (s) by route.", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.batch_size = Histogram("sifthinker_batch_size", "Requests generated together per batch.",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256))
        self.tokens = Counter("sifthinker_generated_tokens", "Tokens generated.")
        self.queue = Gauge("sifthinker_queue_depth", "Requests admitted and waiting to be generated.")

    @classmethod
    def get(cls) -> Metrics:
        if cls._instance is None:
            cls._instance = Metrics()
        return cls._instance


class BodyTooLarge(RequestError):
    pass


async def _send_json(send: Any, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


class Guard:
    """See the module docstring."""

    def __init__(self, app: Any, max_body_bytes: int, metrics: Metrics):
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope.get("path", "")
        route = route_label(path)
        info: dict[str, Any] = {}
        scope.setdefault("state", {})["sif"] = info
        status = {"code": 0}
        too_large = BodyTooLarge(f"the request body is larger than {self.max_body_bytes} bytes (limit "
                                 "serving.max_body_bytes)", 413, limit="max_body_bytes")

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        received = 0

        async def receive_wrapper() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise too_large
            return message

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await _send_json(send_wrapper, 413, too_large.to_json())
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except BodyTooLarge as e:
            if not status["code"]:
                await _send_json(send_wrapper, 413, e.to_json())
        except Exception as e:  # a bug: answered as JSON, logged with its traceback
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            info.setdefault("error", f"internal error ({type(e).__name__})")
            if not status["code"]:
                await _send_json(send_wrapper, 500, {"error": {"message": f"internal error ({type(e).__name__})",
                                                               "type": "server_error"}})
        finally:
            dt = time.perf_counter() - t0
            code = status["code"] or 499  # the client went away before any response
            self.metrics.requests.labels(route, str(code)).inc()
            self.metrics.latency.labels(route).observe(dt)
            if route not in ("health", "metrics"):
                access_log.info(json.dumps({
                    "event": "request", "request_id": info.pop("request_id", None) or uuid.uuid4().hex[:16],
                    "method": scope.get("method"), "route": route, "path": path[:200], "status": code,
                    "duration_ms": round(dt * 1000, 1), **info,
                }, default=str))
