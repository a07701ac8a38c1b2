"""Images in requests: base64, data URLs, raw bytes and (only when allowed) URLs, decoded under the limits.

Decoding is the expensive, attacker-controlled step, so its size is checked from the header before a
single pixel is decoded: Pillow's ``Image.open`` reads only the header, :func:`decode_image_bytes` then
refuses more than ``max_image_pixels`` pixels or an aspect ratio the model's resize cannot take, and
only then calls ``load()``. (A 13000x13000 1-bit PNG is 20 KB on the wire and 169 M pixels decoded.)

The server fetches a remote URL only when ``serving.image_url_allow`` lists a prefix of it, with a
timeout, no redirects and at most ``max_body_bytes`` read.

:func:`read_image` also keeps the client's own bytes (:class:`Encoded`) when the model would see exactly
those pixels from them, so that the SIF transformer forwards them instead of re-encoding the image.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from PIL import Image

from sifthinker.serving.errors import RequestError, limit_error
from sifthinker.serving.limits import MAX_ASPECT_RATIO, Limits

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")
_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*),(?P<data>.*)$", re.DOTALL)
FETCH_TIMEOUT_S = 10.0
_DEFAULT = Limits()


_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Encoded:
    """An image's bytes as the client sent them (``format``: PNG, JPEG or WEBP)."""

    data: bytes
    format: str

    def data_url(self) -> str:
        return f"data:image/{self.format.lower()};base64,{base64.b64encode(self.data).decode('ascii')}"


def decode_image_bytes(raw: bytes, what: str, param: str | None = None, limits: Limits = _DEFAULT) -> Image.Image:
    """PNG/JPEG/WebP bytes -> an RGB image, refusing oversized or degenerate images before decoding."""
    return read_image(raw, what, param, limits)[0]


def read_image(raw: bytes, what: str, param: str | None = None, limits: Limits = _DEFAULT,
               pixels: bool = True) -> tuple[Image.Image, Encoded | None]:
    """:func:`decode_image_bytes`, plus ``raw`` as :class:`Encoded` where it can be forwarded unchanged:
    already RGB and without an EXIF rotation. Anything else is None: vLLM would convert it otherwise than
    ``convert("RGB")`` (RGBA onto white, not black) or turn it upright, and the model must see the same
    pixels whichever predictor serves it.

    ``pixels=False`` (a caller that forwards the bytes and needs only the size): a forwardable image is
    checked by its header and returned undecoded (PIL decodes it on first pixel access); the predictor
    decodes it, and refuses corrupt pixel data itself. Decoding two 320x240 PNGs that nobody here looks at
    was most of the SIF transformer's remaining cost per request (docs/benchmarks.md).
    """
    if not raw:
        raise RequestError(f"{what} is empty", param=param)
    try:
        img = Image.open(io.BytesIO(raw))  # reads the header only
    except Image.DecompressionBombError as e:
        raise limit_error("max_image_pixels", f"{what} is too large: {e}", 413, param) from e
    except Exception as e:  # PIL raises many types for corrupt data
        raise RequestError(f"{what} is not a readable image ({type(e).__name__})", param=param) from e
    if img.format not in IMAGE_FORMATS:
        raise RequestError(f"{what} is {img.format}; supported formats: {', '.join(IMAGE_FORMATS)}", param=param)
    w, h = img.size
    if w < 1 or h < 1:
        raise RequestError(f"{what} has no pixels ({w}x{h})", param=param)
    if w * h > limits.max_image_pixels:
        raise limit_error("max_image_pixels", f"{what} is {w}x{h} = {w * h} pixels, more than "
                          f"{limits.max_image_pixels}", 413, param)
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise RequestError(f"{what} is {w}x{h}: the model takes aspect ratios up to {MAX_ASPECT_RATIO}",
                           param=param, code="aspect_ratio")
    try:
        if not pixels and img.mode == "RGB" and _upright(img, raw):
            return img, Encoded(raw, img.format)  # RGB: nothing to convert
        img.load()
        keep = img.mode == "RGB" and _upright(img, raw)
        return img.convert("RGB"), Encoded(raw, img.format) if keep else None
    except Image.DecompressionBombError as e:
        raise limit_error("max_image_pixels", f"{what} is too large: {e}", 413, param) from e
    except Exception as e:  # truncated or corrupt pixel data
        raise RequestError(f"{what} is not a readable image ({type(e).__name__})", param=param) from e


def _upright(img: Image.Image, raw: bytes) -> bool:
    """No EXIF rotation (vLLM applies one; this server and training do not)."""
    if img.format == "PNG" and "exif" not in img.info:
        if b"eXIf" not in raw:  # no EXIF chunk (PIL's getexif would decode the image to look for one)
            return True
        img.load()  # an EXIF chunk after the pixel data is found only by decoding (or a false hit in them)
    try:
        return img.getexif().get(_EXIF_ORIENTATION, 1) == 1
    except Exception:  # unreadable EXIF: not forwarded (re-encoded), never a refusal the old decode did not make
        return False


def decode_base64(data: str | bytes, what: str, param: str | None = None) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError as e:
            raise RequestError(f"{what} is not base64 text", param=param) from e
    try:  # canonical base64, what clients send: one pass in C, no scans and copies of ~0.3 MB
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    s = "".join(data.split())
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{what} is not valid base64 ({e})", param=param) from e


def url_allowed(url: str, allow: tuple[str, ...]) -> bool:
    """Whether ``url`` lies under one of the ``allow`` prefixes, on a path boundary (a prefix
    ``https://a.example`` does not admit ``https://a.example.evil.com``) and without user info."""
    u = urlparse(url)
    if u.scheme not in ("http", "https") or "@" in u.netloc:
        return False
    for p in allow:
        if url == p or (url.startswith(p) and (p.endswith("/") or url[len(p)] in "/?#")):
            return True
    return False


def fetch_image(url: str, what: str, param: str | None, limits: Limits) -> bytes:
    """GET an allowed image URL (its bytes): no redirects, ``FETCH_TIMEOUT_S``, at most ``max_body_bytes``."""
    import requests

    try:
        with requests.get(url, timeout=FETCH_TIMEOUT_S, stream=True, allow_redirects=False) as r:
            if r.status_code != 200:
                raise RequestError(f"{what}: fetching the URL answered HTTP {r.status_code}", param=param)
            buf = bytearray()
            for chunk in r.iter_content(64 * 1024):
                buf += chunk
                if len(buf) > limits.max_body_bytes:
                    raise limit_error("max_body_bytes", f"{what}: the image at the URL is larger than "
                                      f"{limits.max_body_bytes} bytes", 413, param)
    except requests.RequestException as e:
        raise RequestError(f"{what}: the URL could not be fetched ({type(e).__name__})", param=param) from e
    return bytes(buf)


def decode_image_url(url: Any, what: str, param: str | None = None, limits: Limits = _DEFAULT) -> Image.Image:
    """A ``data:image/...;base64,...`` URL (or an allowed http(s) URL) -> an RGB image."""
    return decode_image_bytes(image_url_bytes(url, what, param, limits), what, param, limits)


def image_url_bytes(url: Any, what: str, param: str | None = None, limits: Limits = _DEFAULT) -> bytes:
    """The image bytes of a ``data:image/...;base64,...`` URL (or of an allowed http(s) URL), not decoded."""
    if not isinstance(url, str) or not url:
        raise RequestError(f"{what}: image_url.url must be a non-empty string", param=param)
    if not url.startswith("data:"):
        if limits.image_url_allow and url_allowed(url, limits.image_url_allow):
            return fetch_image(url, what, param, limits)
        scheme = url.split(":", 1)[0][:20] if ":" in url else url[:20]
        allowed = "; allowed URL prefixes: " + ", ".join(limits.image_url_allow) if limits.image_url_allow else ""
        raise RequestError(
            f"{what}: only base64 data URLs (data:image/png;base64,...) are supported; the server does not "
            f"fetch remote images (got a {scheme!r} URL{allowed})",
            param=param, code="unsupported_url", limit="image_url_allow" if limits.image_url_allow else None,
        )
    m = _DATA_URL_RE.match(url)
    if not m:
        raise RequestError(f"{what}: malformed data URL (expected data:image/png;base64,<data>)", param=param)
    mime = (m["mime"] or "").lower()
    if not mime.startswith("image/"):
        raise RequestError(f"{what}: data URL media type must be image/png or image/jpeg, got {mime[:40] or 'none'!r}",
                           param=param)
    if "base64" not in [p.strip().lower() for p in m["params"].split(";") if p]:
        raise RequestError(f"{what}: the data URL must be base64-encoded (data:{mime[:40]};base64,...)", param=param)
    return decode_base64(m["data"], what, param)


def decode_image_value(value: Any, what: str, param: str | None = None, limits: Limits = _DEFAULT) -> Image.Image:
    """A V1/V2 image value: raw image bytes (V2 binary extension), a data URL, or base64 text."""
    return decode_image_bytes(image_value_bytes(value, what, param, limits), what, param, limits)


def image_value_bytes(value: Any, what: str, param: str | None = None, limits: Limits = _DEFAULT) -> bytes:
    """The image bytes of a V1/V2 image value (see :func:`decode_image_value`), not decoded."""
    if isinstance(value, bytes) and value.startswith(IMAGE_MAGIC):
        return value
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError as e:
            raise RequestError(f"{what} is neither PNG/JPEG/WebP bytes nor base64 text", param=param) from e
    if not isinstance(value, str):
        raise RequestError(f"{what} must be base64 text or a data URL, got {type(value).__name__}", param=param)
    if value.startswith(("data:", "http://", "https://")):
        return image_url_bytes(value, what, param, limits)
    return decode_base64(value, what, param)


def encode_image(img: Image.Image, fmt: str = "PNG") -> str:
    """An image as base64 text (the V2 ``BYTES`` inputs and the body of a data URL)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    return f"data:image/{fmt.lower()};base64,{encode_image(img, fmt)}"
