"""Client errors of the serving routes: one exception, one JSON body, whatever the protocol.

Every refusal is a :class:`RequestError` with a 4xx status and a message that says what to fix; a
refusal caused by a configured limit names the limit (``limit``: the ``serving.*`` key) so that a client
(or an operator reading the logs) knows which knob it hit. The body follows OpenAI's error shape
``{"error": {"message", "type", "param", "code", "limit"}}``; KServe's V1/V2 clients read ``error`` too.
"""

from __future__ import annotations

import math
from typing import Any

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 408: "timeout_error",
          409: "conflict_error", 413: "request_too_large", 429: "rate_limit_error", 503: "server_error",
          502: "server_error"}


class RequestError(Exception):
    """A request the server will not answer: ``status`` (4xx; 502/503 only for server-side conditions such as
    shutdown or an unreachable predictor), the message, the offending parameter and the limit it broke."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 limit: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code or ("limit_exceeded" if limit else None)
        self.limit = limit

    def to_json(self) -> dict:
        err: dict[str, Any] = {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                               "param": self.param, "code": self.code}
        if self.limit:
            err["limit"] = self.limit
        return {"error": err}


def retry_headers(status: int, retry_after_s: float) -> dict[str, str] | None:
    """``Retry-After`` for a refusal that a later try can pass (429 busy, 503 not ready or predictor down)."""
    return {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if status in (429, 503) else None


def limit_error(limit: str, message: str, status: int = 400, param: str | None = None) -> RequestError:
    """A refusal by the configured limit ``serving.<limit>``; the message ends by naming it."""
    return RequestError(f"{message} (limit serving.{limit})", status, param=param, limit=limit)


def short(value: Any, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters: messages and logs never echo a client's payload."""
    r = repr(value)
    return r if len(r) <= n else f"{r[: n - 3]}..."
