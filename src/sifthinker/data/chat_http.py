"""One OpenAI chat-completions POST with retries, shared by the endpoint evaluator and the VLM narrator.

Timeouts, connection errors, 5xx, 408 and 429 are retried with capped exponential backoff and jitter (so
concurrent retries do not stampede); any other 4xx is the item's fault and is never retried.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

RETRY_STATUS = {408, 429}  # 4xx that mean "later", not "never"
MAX_BACKOFF_S = 30.0


def error_message(resp: requests.Response, limit: int = 300) -> str:
    """The server's error message in one line (OpenAI's {"error": {"message"}} or the raw body)."""
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err or body.get("detail") or body.get("message")
        msg = msg or resp.text
    except (ValueError, AttributeError):
        msg = resp.text
    return " ".join(str(msg).split())[:limit]


def _causes(e: BaseException):
    """The exception, its causes and the exceptions urllib3 carries in its arguments (it wraps the socket's)."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop(0)
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [x.__cause__, x.__context__, getattr(x, "reason", None),
                 *(a for a in getattr(x, "args", ()) if isinstance(a, BaseException))]


def connection_problem(e: requests.RequestException, url: str) -> str:
    """What went wrong reaching ``url``, in words a user can act on: refused, timed out, DNS failure or reset."""
    host = urlsplit(url).netloc or url
    chain = list(_causes(e))
    if any(isinstance(x, socket.gaierror) or "NameResolutionError" in type(x).__name__
           or "Name or service not known" in str(x) or "nodename nor servname" in str(x) for x in chain):
        what = f"DNS lookup of {urlsplit(url).hostname or host!r} failed"
    elif isinstance(e, requests.ReadTimeout):  # connected, then no answer
        what = f"{host} did not answer in time"
    elif isinstance(e, requests.Timeout) or any(isinstance(x, socket.timeout | TimeoutError) for x in chain):
        what = f"connecting to {host} timed out"
    elif any(isinstance(x, ConnectionRefusedError) for x in chain):
        what = f"connection to {host} refused (is the server running on that port?)"
    elif any(isinstance(x, ConnectionResetError) for x in chain):
        what = f"connection to {host} reset by the server"
    else:
        what = f"cannot connect to {host} ({type(e).__name__})"
    return f"{what}: {url}"


@dataclass
class ChatReply:
    """Exactly one of: ``content`` (None when the reply had no choices[0].message.content), ``refused``
    (``HTTP 4xx: message``, not retried) or ``failed`` (the last transient problem after every attempt)."""

    content: str | None = None
    status: int = 0
    refused: str | None = None
    failed: str | None = None


def post_chat(session: requests.Session, url: str, body: dict, *, timeout_s: float, retries: int,
              backoff_s: float) -> ChatReply:
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)) * random.uniform(1.0, 1.25))
        try:
            resp = session.post(url, json=body, timeout=timeout_s)
        except requests.Timeout:
            last = f"no answer within {timeout_s:g}s"
            continue
        except requests.ConnectionError as e:
            last = connection_problem(e, url)
            continue
        if resp.status_code >= 500 or resp.status_code in RETRY_STATUS:
            last = f"HTTP {resp.status_code}: {error_message(resp)}"
            continue
        if resp.status_code >= 400:
            return ChatReply(status=resp.status_code, refused=f"HTTP {resp.status_code}: {error_message(resp)}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return ChatReply(status=resp.status_code)
        return ChatReply(content=content if isinstance(content, str) else "", status=resp.status_code)
    return ChatReply(failed=last)
