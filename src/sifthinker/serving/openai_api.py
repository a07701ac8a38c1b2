"""OpenAI-compatible chat schema of the SIFThinker server: request parsing and replies (no web framework).

Request (``POST /openai/v1/chat/completions``)::

    {"model": "<served name>",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Which is closer, the red cube or the blue sphere?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},   # RGB image
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}], # depth image (optional)
     "max_tokens": 256, "temperature": 0, "stream": false, "sif": {"draw": false}}

* One user message (single turn; the SIF prompt is fixed, so system, assistant and tool messages are
  refused); images as ``data:`` URLs (PNG, JPEG, WebP), counted by :func:`request.split_images`.
* The question is the text parts with the SIF instruction and the image labels stripped, so a client may
  send the plain question or the full prompt of :func:`sifthinker.method.prompts.prompt_text`.
* Supported: ``max_tokens`` / ``max_completion_tokens`` (default ``serving.max_new_tokens``),
  ``temperature`` (default 0: greedy), ``stream`` with ``stream_options.include_usage``, ``n`` = 1,
  ``user``, and the extension ``sif.draw``. OpenAI parameters this server does not implement are
  accepted only at their no-op value (``top_p: 1``, ``stop: null``, ...) and refused otherwise; any other
  key is refused. Nothing is silently ignored.

Reply: a ``chat.completion`` (or ``chat.completion.chunk`` events) with ``choices[0].message.content``
the generated text, plus ``sif`` (:func:`sifthinker.serving.sif.sif_object`).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from PIL import Image

from sifthinker.method.prompts import INSTRUCTION
from sifthinker.serving import request as rq
from sifthinker.serving.errors import RequestError, short
from sifthinker.serving.images import (  # noqa: F401  (re-exported: clients and tests build requests here)
    data_url,
    decode_base64,
    decode_image_bytes,
    decode_image_url,
    encode_image,
)
from sifthinker.serving.limits import Limits, check_question
from sifthinker.serving.sif import sif_summary  # noqa: F401  (re-exported)

__all__ = ["RequestError", "chat_completion", "chat_request_body", "parse_chat_request", "strip_instruction"]

_SUPPORTED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stream",
              "stream_options", "n", "user", "sif"}
# OpenAI parameters accepted only at their no-op value (null always is): anything else changes the
# output in a way this server does not implement, so it is refused rather than ignored.
_NO_OP = {"top_p": [1], "frequency_penalty": [0], "presence_penalty": [0], "logprobs": [False],
          "top_logprobs": [0], "stop": [[]], "seed": [], "tools": [[]], "tool_choice": ["none"],
          "functions": [[]], "function_call": ["none"], "response_format": [{"type": "text"}],
          "logit_bias": [{}], "parallel_tool_calls": [], "store": [False], "metadata": [{}],
          "modalities": [["text"]], "service_tier": ["auto", "default"], "reasoning_effort": []}
_MESSAGE_KEYS = {"role", "content", "name"}
_TEXT_SLACK = len(INSTRUCTION) + 1000  # labels and the instruction a full prompt carries
_LABEL_RE = re.compile(r"(?:original|depth)\s+image(?:\s+\d+)?\s*:\s*(?:<image>)?|<image>", re.IGNORECASE)
_FLAT_INSTRUCTION = " ".join(INSTRUCTION.split())


def strip_instruction(text: str) -> str:
    """The bare question: SIF instruction, image labels and ``<image>`` placeholders removed."""
    flat = " ".join(text.split()).replace(_FLAT_INSTRUCTION, " ")
    return " ".join(_LABEL_RE.sub(" ", flat).split())


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind (``True`` is not ``1`` here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _check_params(body: dict) -> None:
    for key, value in body.items():
        if key in _SUPPORTED:
            continue
        if key not in _NO_OP:
            rq.check_keys({key: value}, _SUPPORTED | set(_NO_OP), "")
        if value is not None and not any(_same(value, ok) for ok in _NO_OP[key]):
            raise RequestError(f"{key}={short(value)} is not supported by this server (only "
                               f"{' or '.join(repr(v) for v in [None, *_NO_OP[key]])})", param=key,
                               code="unsupported_parameter")


def parse_chat_request(body: Any, limits: Limits) -> rq.Ask:
    """Validate a chat-completions body into an :class:`~sifthinker.serving.request.Ask` (images not decoded);
    every client mistake raises :class:`RequestError`."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    _check_params(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string", param="model")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise RequestError("user must be a string", param="user")
    stream = rq.bool_param(body.get("stream"), "stream")
    include_usage = False
    if (so := body.get("stream_options")) is not None:
        if not stream:
            raise RequestError("stream_options is only allowed with stream: true", param="stream_options")
        if not isinstance(so, dict):
            raise RequestError("stream_options must be an object", param="stream_options")
        rq.check_keys(so, {"include_usage"}, "stream_options")
        include_usage = rq.bool_param(so.get("include_usage"), "stream_options.include_usage")
    n = rq.int_param(body.get("n"), "n")
    if n is not None and n != 1:
        raise RequestError(f"n must be 1 (one generation per request), got {n}", param="n")
    draw = False
    if (ext := body.get("sif")) is not None:
        if not isinstance(ext, dict):
            raise RequestError("sif must be an object such as {\"draw\": true}", param="sif")
        rq.check_keys(ext, {"draw"}, "sif")
        draw = rq.bool_param(ext.get("draw"), "sif.draw")

    mt, mct = body.get("max_tokens"), body.get("max_completion_tokens")
    if mt is not None and mct is not None and not _same(mt, mct):
        raise RequestError("max_tokens and max_completion_tokens disagree; send one", param="max_tokens")
    key = "max_tokens" if mt is not None else "max_completion_tokens"
    max_tokens = rq.max_tokens_param(mt if mt is not None else mct, key, limits)
    temperature = rq.temperature_param(body.get("temperature"))

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    user = None
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object", param=where)
        rq.check_keys(msg, _MESSAGE_KEYS, where)
        role = msg.get("role")
        if role != "user":
            why = ("multi-turn conversations are not supported" if role in ("assistant", "tool", "function")
                   else "the SIF prompt is fixed: system instructions are not supported"
                   if role in ("system", "developer") else "the role must be user")
            raise RequestError(f"{where} has role {short(role)}: {why}; send one user message",
                               param=f"{where}.role")
        if user is not None:
            raise RequestError("exactly one user message is supported (single-turn)", param=where)
        user = (i, msg)
    i, msg = user  # type: ignore[misc]
    question, refs = _parse_user_content(msg.get("content"), f"messages[{i}].content", limits)
    rgb, depth = rq.split_images(refs, limits, f"messages[{i}].content")
    return rq.Ask(question, rgb, depth, max_tokens, temperature, model=model, stream=stream,
                  include_usage=include_usage, draw=draw)


def _parse_user_content(content: Any, where: str, limits: Limits) -> tuple[str, list[rq.ImageRef]]:
    need = "the user message needs its image(s) as image_url parts (the RGB image, then optionally its depth image)"
    if isinstance(content, str):
        raise RequestError(f"no images: {need}", param=where)
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a list of content parts", param=where)
    texts: list[str] = []
    refs: list[rq.ImageRef] = []
    chars = 0
    for j, part in enumerate(content):
        p = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise RequestError(f"{p} must be an object", param=p)
        kind = part.get("type")
        if kind == "text":
            rq.check_keys(part, {"type", "text"}, p)
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{p}.text must be a string", param=p)
            chars += len(part["text"])
            if chars > limits.max_question_chars + _TEXT_SLACK:  # before any regex runs over it
                check_question("x" * (limits.max_question_chars + 1), limits, p)
            texts.append(part["text"])
        elif kind == "image_url":
            rq.check_keys(part, {"type", "image_url"}, p)
            iu = part.get("image_url")
            if isinstance(iu, dict):
                rq.check_keys(iu, {"url", "detail"}, f"{p}.image_url")
                if iu.get("detail") not in (None, "auto"):
                    raise RequestError(f"{p}.image_url.detail={short(iu.get('detail'))} is not supported (only "
                                       "'auto': the image is resized to the model's pixel budget)", param=p)
                url = iu.get("url")
            else:
                url = iu  # the older plain-string form
            n = len(refs) + 1
            refs.append(rq.ImageRef(url, f"image {n}", p, kind="url"))
        else:
            raise RequestError(f"{p}: unsupported content part type {short(kind)} (use 'text' and 'image_url')",
                               param=p)
    question = strip_instruction("\n".join(texts))
    check_question(question, limits, where)
    if not question:
        raise RequestError("the user message has no question text", param=where)
    return question, refs


def chat_request_body(question: str, image: Image.Image, depth_image: Image.Image | None, model: str,
                      **params: Any) -> dict:
    """A request body for this server (for clients and tests); ``depth_image`` None leaves it to the server."""
    images = [image] if depth_image is None else [image, depth_image]
    content = [{"type": "text", "text": question}]
    content += [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in images]
    return {"model": model, "messages": [{"role": "user", "content": content}], **params}


# ---- replies -----------------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict | None:
    if prompt_tokens is None or completion_tokens is None:
        return None
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_completion(text: str, model: str, finish_reason: str = "stop", prompt_tokens: int | None = None,
                    completion_tokens: int | None = None, sif: dict | None = None) -> dict:
    """A ``chat.completion`` object with the extra ``sif`` field."""
    out: dict[str, Any] = {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason, "logprobs": None}],
    }
    if (u := usage(prompt_tokens, completion_tokens)) is not None:
        out["usage"] = u
    out["sif"] = sif if sif is not None else sif_summary(text)
    return out


def chunk(cid: str, model: str, created: int, delta: dict, finish_reason: str | None = None,
          **extra: Any) -> dict:
    """One ``chat.completion.chunk`` (``extra``: ``sif`` on the last content chunk, ``usage``)."""
    choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}] if delta is not None else []
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices,
            **extra}


def model_list(names: list[str], created: int | None = None) -> dict:
    created = int(time.time()) if created is None else created
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "sifthinker"} for n in names]}
