"""Relative depth maps: normalisation, colour rendering for the model, mean depth in a box, estimators.

Convention (spec 1 and 2.3): relative depth is in [0, 1] with 0 = nearest and 1 = farthest, min-max
normalised per image. The float map is the source of truth; the colour image is only what the model sees.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from zlib_ng import zlib_ng  # deflate ~4x faster than stdlib zlib at level 1: most of a record's PNG time

BoxT = tuple[float, float, float, float]


def normalize_relative(depth: np.ndarray) -> np.ndarray:
    """Min-max normalise a distance-like map (larger = farther) to [0,1], float32."""
    d = np.asarray(depth, dtype=np.float32)
    lo, hi = float(np.min(d)), float(np.max(d))
    if not math.isfinite(lo) or not math.isfinite(hi):
        raise ValueError("depth map has non-finite values")
    if hi - lo < 1e-12:
        return np.zeros_like(d)
    return (d - lo) / (hi - lo)


def from_inverse_depth(inv: np.ndarray) -> np.ndarray:
    """Relative depth (0 near) from a disparity-like output (larger = nearer), e.g. Depth-Anything-V2."""
    return 1.0 - normalize_relative(inv)


@functools.lru_cache(maxsize=2)
def spectral_palette(rounded: bool = True) -> np.ndarray:
    """The 256 ``Spectral_r`` colours as uint8 RGB: rounded (ours), or truncated (Depth-Anything-V2's
    ``(cmap(d)[..., :3] * 255).astype(uint8)``, hence the released SIF-50K's colour PNGs)."""
    # matplotlib is imported lazily: only the data build renders colour images.
    from matplotlib import colormaps

    lut = colormaps["Spectral_r"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0
    return (lut + 0.5 if rounded else lut).astype(np.uint8)


def _spectral_r_lut() -> np.ndarray:
    return spectral_palette(True)


def colour_index(depth_rel: np.ndarray) -> np.ndarray:
    """The palette index of each pixel (uint8): ``rint(255 * (1 - depth))``, near = 255 = red."""
    inv = 1.0 - np.clip(np.asarray(depth_rel, dtype=np.float32), 0.0, 1.0)
    return np.rint(inv * 255.0).astype(np.uint8)


def colorize_indexed(depth_rel: np.ndarray) -> Image.Image:
    """The colour depth image as a palette (``P``) image: the same pixels as :func:`colorize` once
    converted to RGB, a third of the bytes to compress, so the data build writes it several times faster."""
    idx = np.ascontiguousarray(colour_index(depth_rel))
    img = Image.frombuffer("P", (idx.shape[1], idx.shape[0]), idx.tobytes(), "raw", "P", 0, 1)
    img.putpalette(_spectral_r_lut().tobytes())
    return img


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(pixels: np.ndarray, palette: np.ndarray | None = None, level: int = 1) -> bytes:
    """A lossless 8-bit PNG (RGB for (H, W, 3); palette-indexed for (H, W) with ``palette``) with no row
    filters and zlib-ng's level-1 deflate: ~10x faster than PIL's encoder, which was most of a synthetic
    record's build time (the files are ~20% larger than stdlib zlib's). Decoders read it like any PNG."""
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels if palette is not None else pixels[..., :3], dtype=np.uint8).reshape(h, -1)
    raw = np.zeros((h, rows.shape[1] + 1), np.uint8)  # column 0: filter type "none" for every row
    raw[:, 1:] = rows
    head = struct.pack(">IIBBBBB", w, h, 8, 3 if palette is not None else 2, 0, 0, 0)
    plte = _png_chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes()) if palette is not None else b""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", head) + plte
            + _png_chunk(b"IDAT", zlib_ng.compress(raw.tobytes(), level)) + _png_chunk(b"IEND", b""))


def colour_png_bytes(depth_rel: np.ndarray) -> bytes:
    """The colour depth image (:func:`colorize_indexed`'s pixels) as palette PNG bytes, fast."""
    return png_bytes(colour_index(depth_rel), palette=_spectral_r_lut())


def colorize(depth_rel: np.ndarray) -> Image.Image:
    """Render relative depth as the model's depth image: Spectral_r of inverse depth, near = red."""
    return colorize_indexed(depth_rel).convert("RGB")


def box_pixels(box: BoxT, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel index ranges [c0, c1) x [r0, r1) covered by a per-axis normalised box (at least one pixel)."""
    x1, y1, x2, y2 = box
    c0 = min(max(int(math.floor(x1 * width)), 0), width - 1)
    r0 = min(max(int(math.floor(y1 * height)), 0), height - 1)
    c1 = max(min(int(math.ceil(x2 * width)), width), c0 + 1)
    r1 = max(min(int(math.ceil(y2 * height)), height), r0 + 1)
    return c0, r0, c1, r1


def mean_depth(depth_rel: np.ndarray, box: BoxT) -> float:
    """Mean relative depth inside a normalised box (spec: D(box) = mean true depth in that box)."""
    h, w = depth_rel.shape[:2]
    c0, r0, c1, r1 = box_pixels(box, w, h)
    return float(np.mean(depth_rel[r0:r1, c0:c1], dtype=np.float64))


DEPTH_FORMATS = ("npy", "png16")


def save_depth_map(path: Path, depth_rel: np.ndarray) -> None:
    """Store the float map compactly, by the file's suffix: float16 ``.npy``, or a 16-bit ``.png``
    (``round(depth * 65535)``). Either keeps more than the 3 decimals a trace can state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if Path(path).suffix == ".png":
        q = np.rint(np.clip(np.asarray(depth_rel, dtype=np.float32), 0.0, 1.0) * 65535.0).astype(np.uint16)
        Image.fromarray(q).save(path, format="PNG", compress_level=1)
        return
    np.save(path, np.asarray(depth_rel, dtype=np.float16))


def load_depth_map(path: str | Path) -> np.ndarray:
    """A stored float map (``.npy`` of any float dtype, or a 16-bit ``.png``) as float32."""
    if Path(path).suffix == ".png":
        with Image.open(path) as im:
            return np.asarray(im, dtype=np.float32) / 65535.0
    return np.load(path).astype(np.float32)


class ColourDepthDecoder:
    """Colour depth PNG -> relative depth map, by a lookup table over colours (spec 2.3).

    The released SIF-50K keeps depth only as ``Spectral_r`` colour PNGs. The original decoded them with a
    per-pixel nearest-palette-colour search (a KD-tree, ~170 ms for 640x480); here every pixel's 24-bit
        colour indexes a table of 2^24 float32 depths (64 MiB, built once per process), so a decode is one
    key computation and one gather. The table starts with Depth-Anything-V2's truncated palette (which
    SIF-50K used; palette index i means inverse depth i / 255); any other colour (a resized or
    JPEG-compressed image, our rounded palette; NaN in the table) is resolved once to its nearest
    palette colour, as the original did, and remembered: the result is the original's, only faster. A grey image is read as grey-level
    inverse depth (Depth-Anything-V2's ``--grayscale`` output, near = white).
    """

    def __init__(self) -> None:
        self._lut = np.full(1 << 24, np.nan, dtype=np.float32)
        self._palette = spectral_palette(False).astype(np.int32)  # nearest-colour fallback: SIF-50K's palette
        self._values = (1.0 - np.arange(256) / 255.0).astype(np.float32)
        self._lut[self._keys(spectral_palette(False)[None, :, :])[0]] = self._values

    @staticmethod
    def _keys(rgb: np.ndarray) -> np.ndarray:
        """24-bit colour keys ``r | g << 8 | b << 16`` of an H x W x 3 uint8 array (in place: few temporaries)."""
        keys = rgb[..., 2].astype(np.uint32)
        keys <<= 8
        keys |= rgb[..., 1]
        keys <<= 8
        keys |= rgb[..., 0]
        return keys

    def _resolve(self, keys: np.ndarray) -> None:
        """Give unknown colours the depth of their nearest palette colour (Euclidean in RGB)."""
        uniq = np.unique(keys)
        rgb = np.stack([uniq & 255, (uniq >> 8) & 255, (uniq >> 16) & 255], axis=1).astype(np.int32)
        nearest = np.argmin(((rgb[:, None, :] - self._palette[None, :, :]) ** 2).sum(-1), axis=1)
        self._lut[uniq] = self._values[nearest]

    def decode_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Relative depth (0 near, 1 far), float32 H x W, from an H x W x 3 uint8 colour depth image."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 colour image, got {rgb.dtype} {rgb.shape}")
        if _is_grey(rgb[::16, ::16]) and _is_grey(rgb):
            return 1.0 - rgb[..., 1].astype(np.float32) / 255.0
        keys = self._keys(rgb)
        depth = self._lut[keys]
        if np.isnan(depth.min()):  # one reduction finds any unknown colour (NaN propagates)
            self._resolve(keys[np.isnan(depth)])
            depth = self._lut[keys]
        return depth

    def decode(self, image: Image.Image | str | Path) -> np.ndarray:
        """Decode a colour depth image (a PIL image or a file; RGB, RGBA or palette mode)."""
        if not isinstance(image, Image.Image):
            with Image.open(image) as im:
                return self.decode(im)
        if image.mode == "P" and image.palette is not None and image.palette.mode == "RGB":
            # Decode the (at most 256) palette colours, then index: no per-pixel colour work at all.
            pal = np.frombuffer(image.palette.tobytes(), dtype=np.uint8).reshape(1, -1, 3)
            return self.decode_rgb(pal)[0][np.asarray(image, dtype=np.uint8)]
        return self.decode_rgb(np.asarray(image.convert("RGB")))


def _is_grey(rgb: np.ndarray, tolerance: int = 2) -> bool:
    c = rgb[..., :3].astype(np.int16)
    return bool(np.abs(c[..., 0] - c[..., 1]).max() <= tolerance and np.abs(c[..., 1] - c[..., 2]).max() <= tolerance)


@functools.lru_cache(maxsize=1)
def colour_decoder() -> ColourDepthDecoder:
    """The process's decoder (its table is built once)."""
    return ColourDepthDecoder()


class DepthEstimator(Protocol):
    """Anything that turns an RGB image into a relative depth map (0 near, 1 far)."""

    def __call__(self, image: Image.Image) -> np.ndarray: ...


class DepthAnythingV2:
    """The paper's depth model through transformers' depth-estimation pipeline (needs local weights).

    ``model`` is a hub id or a local folder (on a cluster the weights come from the model cache volume),
    ``revision`` pins a hub revision. :meth:`estimate` runs a list of images in batches of
    ``batch_size``; the pipeline stacks a batch without padding, so images are batched with others of
    the same size (a dataset of mixed sizes runs in several smaller batches).
    """

    def __init__(self, model: str = "depth-anything/Depth-Anything-V2-Large-hf", device: str | int = -1,
                 revision: str | None = None, batch_size: int = 8):
        from transformers import pipeline

        self.batch_size = max(1, batch_size)
        self._pipe = pipeline("depth-estimation", model=model, device=device, revision=revision)

    @staticmethod
    def _relative(pred: Any, size: tuple[int, int]) -> np.ndarray:
        # predicted_depth is relative inverse depth; recent pipelines return it at the image's size already.
        arr = pred.squeeze().float().cpu().numpy()
        if arr.shape != (size[1], size[0]):
            arr = np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))
        return from_inverse_depth(arr)

    def estimate(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Relative depth maps (0 near, 1 far) of ``images``, in their order."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.size, []).append(i)
        for size, idx in groups.items():
            preds = self._pipe([images[i].convert("RGB") for i in idx], batch_size=self.batch_size)
            for i, p in zip(idx, preds if isinstance(preds, list) else [preds], strict=True):
                out[i] = self._relative(p["predicted_depth"], size)
        return out  # type: ignore[return-value]

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.estimate([image])[0]
