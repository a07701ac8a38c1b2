"""The SIF transformer forwards the client's image bytes to its predictor instead of re-encoding them,
where the predictor (vLLM) reads the same RGB pixels from them as our own decode does, and decodes no
pixels that nothing in the transformer uses. In process: no server, no predictor (tests/serving/test_vllm.py
sends these requests to a real vLLM)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sifthinker.data.depth_providers import FakeGradientDepth
from sifthinker.serving import openai_api as oa
from sifthinker.serving.errors import RequestError
from sifthinker.serving.images import data_url, decode_base64, decode_image_bytes, read_image
from sifthinker.serving.limits import Limits
from sifthinker.serving.request import decode
from sifthinker.serving.service import Service
from sifthinker.serving.transformer import RemoteBackend, chat_body

QUESTION = "Which is closer, the red cube or the blue sphere?"
LIMITS = Limits()


def _rgb(seed: int = 0, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    px = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(px if channels > 1 else px[..., 0], mode)


def _bytes(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": vLLM turns the image upright, we do not
    return exif


def _png_with_exif_after_pixels(img: Image.Image) -> bytes:
    """A PNG whose eXIf chunk follows the IDAT chunks (PIL writes it before them; the format allows both)."""
    raw = _bytes(img, "PNG", exif=_rotated_exif())
    chunks, pos = [], 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        chunks.append(raw[pos:pos + 12 + length])
        pos += 12 + length
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    assert len(exif) == 1 and rest[-1][4:8] == b"IEND"
    return raw[:8] + b"".join(rest[:-1] + exif + rest[-1:])


def _url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def _ask(*urls: str, draw: bool = False):
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": QUESTION}, *({"type": "image_url", "image_url": {"url": u}} for u in urls)]}]}
    if draw:
        body["sif"] = {"draw": True}
    return oa.parse_chat_request(body, LIMITS)


def _sent_urls(body: dict) -> list[str]:
    return [p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_an_rgb_image_is_forwarded_as_the_clients_bytes(fmt):
    raw = _bytes(_rgb(), fmt)
    img, src = read_image(raw, "image 1")
    assert src is not None and src.data == raw and src.format == fmt
    assert src.data_url() == _url(raw, f"image/{fmt.lower()}")
    assert img.mode == "RGB" and img.size == (64, 48)


@pytest.mark.parametrize("case", ["rgba", "palette", "grey", "exif-rotated jpeg", "exif-rotated png",
                                  "exif after the pixels"])
def test_an_image_the_predictor_would_read_otherwise_is_re_encoded(case):
    """vLLM turns EXIF-rotated images upright and lays RGBA onto white; we use convert("RGB") without
    rotation, as training did. Those images are sent as the PNG of our RGB pixels, not as they came."""
    img = _rgb()
    raw = {"rgba": lambda: _bytes(_rgb(mode="RGBA"), "PNG"),
           "palette": lambda: _bytes(img.convert("P"), "PNG"),
           "grey": lambda: _bytes(img.convert("L"), "PNG"),
           "exif-rotated jpeg": lambda: _bytes(img, "JPEG", exif=_rotated_exif()),
           "exif-rotated png": lambda: _bytes(img, "PNG", exif=_rotated_exif()),
           "exif after the pixels": lambda: _png_with_exif_after_pixels(img)}[case]()
    for pixels in (True, False):
        decoded, src = read_image(raw, "image 1", pixels=pixels)
        assert src is None and decoded.mode == "RGB"
    d = decode(_ask(_url(raw), _url(_bytes(_rgb(1), "PNG"))), LIMITS, None, forward=True)
    sent = _sent_urls(chat_body(d, "m"))
    assert sent[0] == data_url(decode_image_bytes(raw, "x"))  # our RGB pixels, as PNG
    assert sent[1] == _url(_bytes(_rgb(1), "PNG"))  # the plain RGB depth image: as it came


def test_the_transformer_decodes_no_pixels_it_does_not_use():
    """A truncated PNG: its header is fine, its pixel data is not. The native server (pixels needed)
    refuses it; the transformer forwards it and the predictor refuses it (tests/serving/test_vllm.py), unless the
    transformer needs the pixels itself: a drawing, or a depth image to make."""
    full = _bytes(_rgb(), "PNG")
    cut = full[:len(full) // 2]
    depth = _url(_bytes(_rgb(1), "PNG"))
    with pytest.raises(RequestError, match="image 1 is not a readable image"):
        decode(_ask(_url(cut), depth), LIMITS, None)  # the native server
    d = decode(_ask(_url(cut), depth), LIMITS, None, forward=True)
    assert d.images[0].size == (64, 48) and _sent_urls(chat_body(d, "m"))[0] == _url(cut)
    with pytest.raises(RequestError, match="image 1 is not a readable image"):
        decode(_ask(_url(cut), depth, draw=True), LIMITS, None, forward=True)
    with pytest.raises(RequestError, match="image 1 is not a readable image"):
        decode(_ask(_url(cut)), LIMITS, FakeGradientDepth(), forward=True)
    # the header's limits still hold without decoding
    wide = _url(_bytes(_rgb(size=(600, 2)), "PNG"))
    with pytest.raises(RequestError, match="aspect ratio"):
        decode(_ask(wide, depth), LIMITS, None, forward=True)


def test_the_service_forwards_for_a_remote_predictor_only():
    rgb, depth = _bytes(_rgb(), "JPEG"), _bytes(_rgb(1), "PNG")
    ask = _ask(_url(rgb, "image/png"), _url(depth))  # the media type lies: the bytes are a JPEG
    remote = Service(RemoteBackend("http://127.0.0.1:1", "m", LIMITS), "sifthinker", (), LIMITS)
    try:
        prepared = remote._prepare(ask)
    finally:
        remote.close()
    assert _sent_urls(prepared.payload) == [_url(rgb, "image/jpeg"), _url(depth)]
    # the depth provider's image has no client bytes: PNG of the provider's output
    d = decode(_ask(_url(rgb)), LIMITS, FakeGradientDepth(), forward=True)
    assert d.sources[1] is None
    assert _sent_urls(chat_body(d, "m"))[1] == data_url(FakeGradientDepth()(decode_image_bytes(rgb, "x")))


@pytest.mark.parametrize("text", ["", "YQ==", "YQ", "YW Jj\n", "-_8=", "YWJjZA", b"YWJj", "YQ=\n"])
def test_base64_fast_path_gives_what_the_normalising_path_gives(text):
    s = text.decode() if isinstance(text, bytes) else text
    s = "".join(s.split()).replace("-", "+").replace("_", "/")
    assert decode_base64(text, "x") == base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


@pytest.mark.parametrize("text", ["a===", "YQ==YQ==", "=YQ=", "Y$Q=", "é", "Y"])
def test_base64_still_refuses_what_it_refused(text):
    with pytest.raises(RequestError, match="not valid base64"):
        decode_base64(text, "image 1")


def test_png_helper_really_moves_the_exif_chunk():
    raw = _png_with_exif_after_pixels(_rgb())
    assert raw.index(b"eXIf") > raw.index(b"IDAT")
    assert zlib.crc32(raw[-8:-4]) == struct.unpack(">I", raw[-4:])[0]  # IEND intact
    img = Image.open(io.BytesIO(raw))
    assert "exif" not in img.info  # PIL finds it only when decoding
    img.load()
    assert img.getexif()[0x0112] == 6
