"""Relative depth maps: normalisation, colour rendering for the model, mean depth in a box, estimators.

Convention (spec 1 and 2.3): relative depth is in [0, 1] with 0 = nearest and 1 = farthest, min-max
normalised per image. The float map is the source of truth; the colour image is only what the model sees.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

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


@functools.lru_cache(maxsize=1)
def _spectral_r_lut() -> np.ndarray:
    # matplotlib is imported lazily: only the data build renders colour images.
    from matplotlib import colormaps

    lut = colormaps["Spectral_r"](np.linspace(0.0, 1.0, 256))[:, :3]
    return (lut * 255.0 + 0.5).astype(np.uint8)


def colorize(depth_rel: np.ndarray) -> Image.Image:
    """Render relative depth as the model's depth image: Spectral_r of inverse depth, near = red."""
    inv = 1.0 - np.clip(np.asarray(depth_rel, dtype=np.float32), 0.0, 1.0)
    idx = np.rint(inv * 255.0).astype(np.int64)
    return Image.fromarray(_spectral_r_lut()[idx], mode="RGB")


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


def save_depth_map(path: Path, depth_rel: np.ndarray) -> None:
    """Store the float map as float16 .npy (3 significant decimals are all a trace can state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(depth_rel, dtype=np.float16))


def load_depth_map(path: str | Path) -> np.ndarray:
    return np.load(path).astype(np.float32)


class DepthEstimator(Protocol):
    """Anything that turns an RGB image into a relative depth map (0 near, 1 far)."""

    def __call__(self, image: Image.Image) -> np.ndarray: ...


class DepthAnythingV2:
    """The paper's depth model through transformers' depth-estimation pipeline (needs local weights).

    `model` is a hub id or a local folder; on a cluster the weights come from the model cache volume.
    """

    def __init__(self, model: str = "depth-anything/Depth-Anything-V2-Large-hf", device: str | int = -1):
        from transformers import pipeline

        self._pipe = pipeline("depth-estimation", model=model, device=device)

    def __call__(self, image: Image.Image) -> np.ndarray:
        out = self._pipe(image)
        # predicted_depth is relative inverse depth at the model's resolution: resize to the image.
        pred = out["predicted_depth"].squeeze().float().numpy()
        resized = Image.fromarray(pred).resize(image.size, Image.BILINEAR)
        return from_inverse_depth(np.asarray(resized))
