"""OpenAI-compatible chat schema for the SIFThinker server: request parsing, images, replies.

Pure functions (no web framework): the server maps :class:`RequestError` to an HTTP status with an
OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``.

Request (``POST /openai/v1/chat/completions``)::

    {"model": "<served name>",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Which is closer, the red cube or the blue sphere?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},   # RGB image
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}], # colour depth image
     "max_tokens": 256, "temperature": 0}

* Exactly one user message with exactly two images (first RGB, second the colour depth image) as
  base64 ``data:`` URLs (PNG, JPEG or WebP; the server never fetches remote URLs). System/developer
  messages are accepted and ignored (the SIF prompt is fixed); assistant/tool turns are rejected
  (single-turn only).
* The question is the concatenated text parts with the SIF instruction and any ``Original image:`` /
  ``Depth image:`` / ``<image>`` labels stripped, so a client may send the plain question or the full
  prompt of :func:`sifthinker.prompts.prompt_text`.
* ``max_tokens`` (or ``max_completion_tokens``) defaults to the server's ``max_new_tokens``;
  ``temperature`` defaults to 0 (greedy, unlike OpenAI's 1.0). ``n`` must be 1 and ``stream`` false:
  the server answers one generation per request (no batching across requests yet).

Reply: a standard ``chat.completion`` whose ``choices[0].message.content`` is the full generated text,
plus ``sif`` = :func:`sif_summary` (answer, parsed trace steps or null, format_valid, problems).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sifthinker.prompts import INSTRUCTION

MAX_TOKENS_LIMIT = 4096
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.DOTALL)
_LABEL_RE = re.compile(r"(?:original|depth)\s+image\s*:\s*(?:<image>)?|<image>", re.IGNORECASE)


class RequestError(Exception):
    """A client error: ``status`` (4xx), a message that says what to fix, and the offending parameter."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    def to_json(self) -> dict:
        kind = {404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error"}.get(
            self.status, "invalid_request_error"
        )
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    model: str | None
    question: str
    image: Image.Image
    depth_image: Image.Image
    max_tokens: int
    temperature: float


# ---- images ----------------------------------------------------------------------------------------
def decode_image_bytes(raw: bytes, what: str, param: str | None = None) -> Image.Image:
    """PNG/JPEG/WebP bytes -> an RGB PIL image; :class:`RequestError` when they are not such an image."""
    if len(raw) > MAX_IMAGE_BYTES:
        raise RequestError(f"{what} is {len(raw)} bytes; the limit is {MAX_IMAGE_BYTES}", 413, param)
    if not raw:
        raise RequestError(f"{what} is empty", param=param)
    try:
        img = Image.open(io.BytesIO(raw))
        fmt = img.format
        img.load()
    except Image.DecompressionBombError as e:
        raise RequestError(f"{what} is too large: {e}", 413, param) from e
    except Exception as e:  # PIL raises many types for corrupt data
        raise RequestError(f"{what} is not a readable image ({type(e).__name__}: {e})", param=param) from e
    if fmt not in IMAGE_FORMATS:
        raise RequestError(f"{what} is {fmt}; supported formats: {', '.join(IMAGE_FORMATS)}", param=param)
    return img.convert("RGB")


def decode_base64(data: str | bytes, what: str, param: str | None = None) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError as e:
            raise RequestError(f"{what} is not base64 text", param=param) from e
    s = "".join(data.split())
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{what} is not valid base64 ({e})", param=param) from e


def decode_data_url(url: Any, what: str, param: str | None = None) -> Image.Image:
    """A ``data:image/...;base64,...`` URL -> an RGB image."""
    if not isinstance(url, str) or not url:
        raise RequestError(f"{what}: image_url.url must be a non-empty string", param=param)
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url else url[:20]
        raise RequestError(
            f"{what}: only base64 data URLs (data:image/png;base64,...) are supported; the server does not "
            f"fetch remote images (got a {scheme!r} URL)",
            param=param,
            code="unsupported_url",
        )
    m = _DATA_URL_RE.match(url)
    if not m:
        raise RequestError(f"{what}: malformed data URL (expected data:image/png;base64,<data>)", param=param)
    mime = (m["mime"] or "").lower()
    if not mime.startswith("image/"):
        raise RequestError(f"{what}: data URL media type must be image/png or image/jpeg, got {mime or 'none'!r}", param=param)
    if "base64" not in [p.strip().lower() for p in m["params"].split(";") if p]:
        raise RequestError(f"{what}: the data URL must be base64-encoded (data:{mime};base64,...)", param=param)
    return decode_image_bytes(decode_base64(m["data"], what, param), what, param)


def encode_image(img: Image.Image, fmt: str = "PNG") -> str:
    """An image as base64 text (the V2 ``BYTES`` inputs and the body of a data URL)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    return f"data:image/{fmt.lower()};base64,{encode_image(img, fmt)}"


# ---- request ---------------------------------------------------------------------------------------
def strip_instruction(text: str) -> str:
    """The bare question: SIF instruction, image labels and ``<image>`` placeholders removed."""
    flat = " ".join(text.split())
    flat = flat.replace(" ".join(INSTRUCTION.split()), " ")
    flat = _LABEL_RE.sub(" ", flat)
    return " ".join(flat.split())


def _int_param(body: dict, key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{key} must be an integer, got {v!r}", param=key)
    return v


def parse_chat_request(body: Any, default_max_tokens: int, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> ChatRequest:
    """Validate an OpenAI chat-completions body; every client mistake raises :class:`RequestError`."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string", param="model")
    if body.get("stream"):
        raise RequestError("stream=true is not supported; the server returns one complete reply", param="stream")
    n = _int_param(body, "n")
    if n is not None and n != 1:
        raise RequestError(f"n must be 1 (one generation per request), got {n}", param="n")

    max_tokens = _int_param(body, "max_tokens")
    mct = _int_param(body, "max_completion_tokens")
    if max_tokens is not None and mct is not None and max_tokens != mct:
        raise RequestError("max_tokens and max_completion_tokens disagree; send one", param="max_tokens")
    key = "max_tokens" if max_tokens is not None else "max_completion_tokens"
    max_tokens = max_tokens if max_tokens is not None else mct
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif max_tokens <= 0:
        raise RequestError(f"{key} must be a positive integer, got {max_tokens}", param=key)
    elif max_tokens > max_tokens_limit:
        raise RequestError(f"{key} must be at most {max_tokens_limit}, got {max_tokens}", param=key)

    temperature = body.get("temperature")
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise RequestError(f"temperature must be a number in [0, 2], got {temperature!r}", param="temperature")

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    user = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RequestError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = msg.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            if user is not None:
                raise RequestError("exactly one user message is supported (single-turn)", param=f"messages[{i}]")
            user = (i, msg)
        elif role in ("assistant", "tool", "function"):
            raise RequestError(f"multi-turn conversations are not supported (messages[{i}] has role {role!r})", param=f"messages[{i}].role")
        else:
            raise RequestError(f"messages[{i}].role must be system, developer or user, got {role!r}", param=f"messages[{i}].role")
    if user is None:
        raise RequestError("no user message: send one user message with the question and two images", param="messages")
    i, msg = user
    question, image, depth_image = _parse_user_content(msg.get("content"), f"messages[{i}].content")
    return ChatRequest(model, question, image, depth_image, max_tokens, float(temperature))


def _parse_user_content(content: Any, where: str) -> tuple[str, Image.Image, Image.Image]:
    need = "the user message needs two images as image_url parts: the RGB image, then the colour depth image"
    if isinstance(content, str):
        raise RequestError(f"no images: {need}", param=where)
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a list of content parts", param=where)
    texts: list[str] = []
    urls: list[tuple[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise RequestError(f"{p} must be an object", param=p)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{p}.text must be a string", param=p)
            texts.append(part["text"])
        elif kind == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu  # tolerate the older plain-string form
            urls.append((p, url))
        else:
            raise RequestError(f"{p}: unsupported content part type {kind!r} (use 'text' and 'image_url')", param=p)
    if not urls:
        raise RequestError(f"no images: {need}", param=where)
    if len(urls) != 2:
        raise RequestError(f"got {len(urls)} image(s): {need}", param=where)
    image = decode_data_url(urls[0][1], "the RGB image (first image)", urls[0][0])
    depth = decode_data_url(urls[1][1], "the depth image (second image)", urls[1][0])
    question = strip_instruction("\n".join(texts))
    if not question:
        raise RequestError("the user message has no question text", param=where)
    return question, image, depth


def chat_request_body(
    question: str, image: Image.Image, depth_image: Image.Image, model: str, **params: Any
) -> dict:
    """A request body for this server (for clients and tests)."""
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image_url", "image_url": {"url": data_url(image)}},
                    {"type": "image_url", "image_url": {"url": data_url(depth_image)}},
                ],
            }
        ],
        **params,
    }


# ---- reply -----------------------------------------------------------------------------------------
def sif_summary(text: str) -> dict:
    """``{"answer", "trace", "format_valid", "problems"}`` for a generated text.

    ``trace`` is the list of steps ``[{"boxes": [{"bbox_2d": [x1,y1,x2,y2], "depth": d}], "text": ...}]``
    when the text is a valid SIF trace, else null; ``answer`` is the parsed answer, or what the lenient
    extractor recovers from an invalid text (null when there is no ``<answer>``).
    """
    from sifthinker import trace as sif

    problems = sif.validate(text)
    steps = None
    answer = None
    if not problems:
        try:
            t = sif.parse(text)
        except sif.TraceFormatError as e:  # validate and parse should agree; be safe
            problems = [str(e)]
        else:
            answer = t.answer
            steps = [
                {"boxes": [{"bbox_2d": [b.x1, b.y1, b.x2, b.y2], "depth": b.depth} for b in s.boxes], "text": s.text}
                for s in t.steps
            ]
    if answer is None:
        answer = sif.extract_answer(text)
    return {"answer": answer, "trace": steps, "format_valid": not problems, "problems": list(problems)}


def chat_completion(
    text: str,
    model: str,
    finish_reason: str = "stop",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> dict:
    """A ``chat.completion`` object with the extra ``sif`` field."""
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        out["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    out["sif"] = sif_summary(text)
    return out


def model_list(names: list[str], created: int | None = None) -> dict:
    created = int(time.time()) if created is None else created
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": "sifthinker"} for n in names],
    }
