"""The serving limits in one object, and the cheap checks that run before any expensive work.

:class:`Limits` is read from the recipe's ``serving`` section (``docs/serving.md`` lists every key).
:func:`parse_json` is the one JSON reader of every route: orjson (no recursion in Python, its own depth
cap of 1024) and then an iterative depth check, so that deeply nested input is a 400 and never a
RecursionError deeper in the server.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from sifthinker.serving.errors import RequestError, limit_error

MAX_JSON_DEPTH = 32  # the deepest valid request (V2 data of shape [1]) nests 5 levels
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's smart_resize refuses images more elongated than this


@dataclasses.dataclass(frozen=True)
class Limits:
    max_batch_size: int = 8
    max_batch_wait_ms: float = 200.0
    max_queue: int = 64
    max_body_bytes: int = 16 * 1024 * 1024
    max_images: int = 2  # one RGB image and its depth image; raise it to serve multi-image items
    max_image_pixels: int = 4096 * 4096
    max_question_chars: int = 8000
    max_prompt_tokens: int = 8192
    max_tokens_limit: int = 4096
    request_timeout_s: float = 300.0
    retry_after_s: float = 5.0
    predictor_probe_s: float = 5.0
    image_url_allow: tuple[str, ...] = ()
    default_max_tokens: int = 512  # serving.max_new_tokens overrides it

    @classmethod
    def from_config(cls, serving: Any, default_max_tokens: int | None = None) -> Limits:
        """From a ``ServingConfig``; ``default_max_tokens`` overrides ``serving.max_new_tokens``."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"image_url_allow", "default_max_tokens"}
        kw = {k: getattr(serving, k) for k in fields}
        default = int(default_max_tokens or serving.max_new_tokens)
        return cls(**kw, image_url_allow=tuple(serving.image_url_allow),
                   default_max_tokens=min(default, serving.max_tokens_limit))


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; 400 for invalid JSON or nesting deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RequestError(f"the request body is not valid JSON: {str(e)[:200]}") from e
    check_depth(value)
    return value


def check_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """400 when ``value`` nests lists/objects deeper than ``max_depth`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            if d > max_depth:
                raise RequestError(f"the request nests deeper than {max_depth} levels")
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))


def check_question(text: str, limits: Limits, param: str | None = None) -> None:
    if len(text) > limits.max_question_chars:
        raise limit_error("max_question_chars", f"the question has {len(text)} characters, more than "
                          f"{limits.max_question_chars}", 400, param)


def check_image_count(n_rgb: int, limits: Limits, param: str | None = None) -> None:
    """Counts the images the model sees: each RGB image and its depth image (sent or made by the provider)."""
    n = 2 * n_rgb
    if n > limits.max_images:
        raise limit_error("max_images", f"got {n} image(s) ({n_rgb} RGB image(s) and their depth images), more "
                          f"than {limits.max_images}", 400, param)
