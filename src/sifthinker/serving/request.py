"""What every route parses a request into (:class:`Ask`), and the shared rules for its parts.

Parsing is split in two on purpose: :class:`Ask` is built on the event loop from the JSON alone (cheap
checks: types, counts, lengths, limits), and :func:`decode` (base64, image headers, pixels, the depth
provider) runs in a worker thread, so that no request can hold the event loop for long.

Images: one RGB image gets its depth image from the configured depth provider; two are the RGB image and
its depth image. Multi-image items (``2N`` images: ``N`` RGB images followed by their ``N`` depth images,
the order the evaluation runner and the SIF prompt use) are served only when ``serving.max_images`` allows
``2N`` (default 2: one RGB image and its depth image); any other count is a 400.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from PIL import Image

from sifthinker.serving.errors import RequestError, limit_error, short
from sifthinker.serving.images import Encoded, image_url_bytes, image_value_bytes, read_image
from sifthinker.serving.limits import Limits, check_image_count


@dataclasses.dataclass
class ImageRef:
    """An image as the client sent it (not decoded yet): ``kind`` "url" (an OpenAI image_url) or "value"
    (a V1/V2 value: base64 text, raw bytes or a data URL)."""

    value: Any
    what: str
    param: str | None
    kind: str = "value"


@dataclasses.dataclass
class Ask:
    question: str
    rgb: list[ImageRef]
    depth: list[ImageRef]  # empty: the depth provider makes them
    max_tokens: int
    temperature: float = 0.0
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    draw: bool = False


@dataclasses.dataclass
class Decoded:
    ask: Ask
    # RGB; for a backend that forwards the bytes, possibly undecoded (header only: decode's ``forward``)
    images: list[Image.Image]
    depth_images: list[Image.Image]
    # per image (images, then depth images): the client's bytes where they can be forwarded unchanged
    # (images.read_image), else None (a depth image the server made, an RGBA image, ...)
    sources: list[Encoded | None] = dataclasses.field(default_factory=list)


def split_images(refs: list[ImageRef], limits: Limits, where: str) -> tuple[list[ImageRef], list[ImageRef]]:
    """The image rule of the module docstring: (RGB refs, depth refs)."""
    need = ("send the RGB image (its depth image then comes from the server's depth provider), or the RGB "
            "image then its depth image (N RGB images then their N depth images where serving.max_images allows)")
    if not refs:
        raise RequestError(f"no images: {need}", param=where)
    if len(refs) == 1:
        check_image_count(1, limits, where)
        return refs, []
    if len(refs) % 2:
        raise RequestError(f"got {len(refs)} image(s): {need}", param=where)
    n = len(refs) // 2
    check_image_count(n, limits, where)
    return refs[:n], refs[n:]


def decode(ask: Ask, limits: Limits, depth_provider: Callable[[Image.Image], Image.Image] | None,
           forward: bool = False) -> Decoded:
    """Decode every image (in a worker thread) and make the missing depth images.

    ``forward``: the backend sends the predictor each image's bytes (the SIF transformer), so an image
    whose pixels nothing here needs (no depth provider, no drawing) is checked by its header only
    (:func:`~sifthinker.serving.images.read_image` with ``pixels=False``)."""

    def one(ref: ImageRef, pixels: bool) -> tuple[Image.Image, Encoded | None]:
        raw = (image_url_bytes if ref.kind == "url" else image_value_bytes)(ref.value, ref.what, ref.param, limits)
        return read_image(raw, ref.what, ref.param, limits, pixels=pixels)

    need = not forward or ask.draw
    rgb = [one(r, need or not ask.depth) for r in ask.rgb]
    depth = [one(r, need) for r in ask.depth]
    if not depth:
        if depth_provider is None:
            raise RequestError("this server has no depth provider: send each RGB image's depth image too",
                               param="images")
        depth = [(depth_provider(im), None) for im, _ in rgb]
    return Decoded(ask, [im for im, _ in rgb], [im for im, _ in depth], [src for _, src in rgb + depth])


# ---- generation parameters shared by the V1 and V2 routes --------------------------------------------
def int_param(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer, got {short(value)}", param=key)
    return value


def max_tokens_param(value: Any, key: str, limits: Limits) -> int:
    v = int_param(value, key)
    if v is None:
        return limits.default_max_tokens
    if v < 1:
        raise RequestError(f"{key} must be a positive integer, got {v}", param=key)
    if v > limits.max_tokens_limit:
        raise limit_error("max_tokens_limit", f"{key} must be at most {limits.max_tokens_limit}, got {v}", 400, key)
    return v


def temperature_param(value: Any, key: str = "temperature") -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise RequestError(f"{key} must be a number in [0, 2], got {short(value)}", param=key)
    return float(value)


def bool_param(value: Any, key: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false, got {short(value)}", param=key)
    return value


def check_keys(obj: dict, allowed: set[str] | dict, where: str) -> None:
    """400 naming the first key of ``obj`` that is not in ``allowed`` (unknown fields are never ignored)."""
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise RequestError(f"{where}: unknown field {short(unknown[0])} (supported: {', '.join(sorted(allowed))})",
                           param=f"{where}.{unknown[0][:40]}" if where else unknown[0][:40])
