"""Box geometry and every coordinate-frame conversion (spec sections 3 and 6).

A box is ``(x1, y1, x2, y2)``. Rewards work in per-axis normalised coordinates (x / width, y / height).
Union areas are exact (sweep over compressed x coordinates), never rasterised, so a tiny box is not
lost to a grid and results do not depend on a resolution.

Frames (:class:`Frame`), all per axis unless said otherwise:

* ``PIXEL``: absolute pixels of the original W x H image.
* ``NORM``: x / W, y / H in [0, 1] (the SIF trace frame).
* ``QWEN25``: absolute pixels of Qwen2.5-VL's *resized* input, ``smart_resize(H, W)``; what the model
  natively emits for grounding. ``min_pixels``/``max_pixels``/``factor`` must match the processor.
* ``THOUSAND``: integers 0..1000 per axis (Qwen3-VL and others); ``from_norm`` rounds to integers.
* ``VISCOT_SQUARE``: normalised on the square canvas of side ``S = max(W, H)`` on which the image is
  pasted. VisCoT (a LLaVA derivative) pads the image *centred* (LLaVA's ``expand2square`` pastes at
  offset ``(S - W) // 2, (S - H) // 2``), so ``pad="center"`` is the default; ``pad="topleft"`` covers
  data that pasted the image at the origin. Reading such a box per axis is defect D1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

BoxT = tuple[float, float, float, float]

QWEN25_FACTOR = 28
QWEN25_MIN_PIXELS = 56 * 56
QWEN25_MAX_PIXELS = 14 * 14 * 4 * 1280
MAX_ASPECT_RATIO = 200


def box_area(b: BoxT) -> float:
    """Area of a box; degenerate or inverted boxes have area 0."""
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _intersection(a: BoxT, b: BoxT) -> BoxT | None:
    """The intersection box, or None when it has no area."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def box_iou(a: BoxT, b: BoxT) -> float:
    """Intersection over union of two boxes; 0.0 when the union has no area."""
    inter = _intersection(a, b)
    i = box_area(inter) if inter else 0.0
    u = box_area(a) + box_area(b) - i
    return i / u if u > 0 else 0.0


def union_area(boxes: Sequence[BoxT]) -> float:
    """Exact area of the union of ``boxes``.

    Sweep over the distinct x coordinates: within each vertical slab the covered length is the merged
    length of the y-intervals of the boxes spanning the slab. O(n^2 log n), ample for trace-sized inputs.
    """
    valid = [tuple(map(float, b)) for b in boxes if box_area(b) > 0]
    if not valid:
        return 0.0
    xs = sorted({b[0] for b in valid} | {b[2] for b in valid})
    total = 0.0
    for left, right in itertools.pairwise(xs):
        spans = sorted((b[1], b[3]) for b in valid if b[0] <= left and b[2] >= right)
        covered, cur_lo, cur_hi = 0.0, None, None
        for lo, hi in spans:
            if cur_hi is None or lo > cur_hi:
                if cur_hi is not None:
                    covered += cur_hi - cur_lo
                cur_lo, cur_hi = lo, hi
            else:
                cur_hi = max(cur_hi, hi)
        if cur_hi is not None:
            covered += cur_hi - cur_lo
        total += covered * (right - left)
    return total


def union_iou(p: Sequence[BoxT], g: Sequence[BoxT]) -> float:
    """IoU of the union of ``p`` with the union of ``g``, exactly; 0.0 if either is empty.

    The intersection of two unions is the union of all pairwise intersections, so it is exact as well.
    """
    if not p or not g:
        return 0.0
    inter_boxes = [ib for a in p for b in g if (ib := _intersection(a, b)) is not None]
    inter = union_area(inter_boxes)
    union = union_area(p) + union_area(g) - inter
    return inter / union if union > 0 else 0.0


def hungarian_mean_iou(p: Sequence[BoxT], g: Sequence[BoxT]) -> float:
    """Mean IoU over an optimal one-to-one matching of ``p`` and ``g`` (maximising total IoU).

    The mean is over the ``min(|p|, |g|)`` matched pairs, so unmatched extra or missing boxes cost
    nothing here (the union term of :func:`iou_h` charges for them). 0.0 if either is empty.
    """
    if not p or not g:
        return 0.0
    iou = np.array([[box_iou(a, b) for b in g] for a in p], dtype=float)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].mean())


def iou_h(p: Sequence[BoxT], g: Sequence[BoxT]) -> float:
    """The spec's IoU_h: ``0.5 * (union_iou(p, g) + hungarian_mean_iou(p, g))``, in [0, 1]."""
    return 0.5 * (union_iou(p, g) + hungarian_mean_iou(p, g))


def enclosing_box(boxes: Sequence[BoxT]) -> BoxT:
    """Smallest box containing all ``boxes``; ValueError if there are none."""
    if not boxes:
        raise ValueError("enclosing_box needs at least one box")
    return (
        float(min(b[0] for b in boxes)),
        float(min(b[1] for b in boxes)),
        float(max(b[2] for b in boxes)),
        float(max(b[3] for b in boxes)),
    )


def clip_box(b: BoxT, width: float, height: float) -> BoxT:
    """Clip a box to ``[0, width] x [0, height]`` (use 1, 1 for normalised boxes)."""
    return (
        float(min(max(b[0], 0.0), width)),
        float(min(max(b[1], 0.0), height)),
        float(min(max(b[2], 0.0), width)),
        float(min(max(b[3], 0.0), height)),
    )


def round_box(b: BoxT, ndigits: int = 3) -> BoxT:
    """Round every coordinate (3 decimals is the SIF trace precision); -0.0 becomes 0.0."""
    return tuple(round(float(v), ndigits) + 0.0 for v in b)  # type: ignore[return-value]


# ---- frames ---------------------------------------------------------------------------------------
class Frame(StrEnum):
    """Coordinate frames a box may be expressed in (a ``str`` enum; see the module docstring)."""

    PIXEL = "pixel"
    NORM = "norm"
    QWEN25 = "qwen25"
    THOUSAND = "norm1000"
    VISCOT_SQUARE = "viscot_square"


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN25_FACTOR,
    min_pixels: int = QWEN25_MIN_PIXELS,
    max_pixels: int = QWEN25_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2.5-VL's input size ``(height, width)`` for an image of ``height x width`` pixels.

    Each side is rounded to the nearest multiple of ``factor``; if the area then exceeds ``max_pixels``
    (or falls below ``min_pixels``) both sides are scaled by the same factor and floored (ceiled) to
    multiples of ``factor``. Raises ValueError for non-positive sizes or an aspect ratio above 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio must be at most {MAX_ASPECT_RATIO}, got {max(height, width) / min(height, width):g}"
        )
    # round() is Python's half-to-even rounding, as in the reference implementation.
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


_FRAME_KWARGS = {"factor", "min_pixels", "max_pixels", "pad"}


def _frame_params(frame: Frame | str, width: int, height: int, kw: dict[str, Any]) -> tuple[float, ...]:
    """Per-axis affine parameters ``(sx, sy, ox, oy)`` with ``frame = (norm * (W, H) + (ox, oy)) / (sx, sy)``.

    Every frame is an axis-aligned affine map of the per-axis normalised one, so both directions of
    the conversion share this single definition (which is what keeps the round trips exact).
    """
    unknown = set(kw) - _FRAME_KWARGS
    if unknown:
        raise TypeError(f"unknown frame option(s): {sorted(unknown)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    frame = Frame(frame)
    if frame is Frame.NORM:
        return (width, height, 0.0, 0.0)
    if frame is Frame.PIXEL:
        return (1.0, 1.0, 0.0, 0.0)
    if frame is Frame.THOUSAND:
        return (width / 1000, height / 1000, 0.0, 0.0)
    if frame is Frame.QWEN25:
        qkw = {k: kw[k] for k in ("factor", "min_pixels", "max_pixels") if k in kw}
        rh, rw = smart_resize(height, width, **qkw)
        return (width / rw, height / rh, 0.0, 0.0)
    pad: Literal["center", "topleft"] = kw.get("pad", "center")
    side = max(width, height)
    if pad == "center":
        # Integer offsets, like the PIL paste in LLaVA's expand2square.
        ox, oy = (side - width) // 2, (side - height) // 2
    elif pad == "topleft":
        ox, oy = 0, 0
    else:
        raise ValueError(f"pad must be 'center' or 'topleft', got {pad!r}")
    return (side, side, float(ox), float(oy))


def to_norm(box: BoxT, frame: Frame | str, width: int, height: int, **kw: Any) -> BoxT:
    """Convert ``box`` from ``frame`` to per-axis normalised coordinates of a ``width x height`` image.

    Options: ``factor``, ``min_pixels``, ``max_pixels`` (QWEN25) and ``pad`` (VISCOT_SQUARE).
    """
    sx, sy, ox, oy = _frame_params(frame, width, height, kw)
    x1, y1, x2, y2 = (float(v) for v in box)
    if Frame(frame) is Frame.NORM:
        return (x1, y1, x2, y2)  # exact identity: x * W / W can differ from x in the last bit
    return ((x1 * sx - ox) / width, (y1 * sy - oy) / height, (x2 * sx - ox) / width, (y2 * sy - oy) / height)


def from_norm(box: BoxT, frame: Frame | str, width: int, height: int, **kw: Any) -> BoxT:
    """Convert a per-axis normalised ``box`` to ``frame``; THOUSAND values are rounded to integers."""
    sx, sy, ox, oy = _frame_params(frame, width, height, kw)
    x1, y1, x2, y2 = (float(v) for v in box)
    out = ((x1 * width + ox) / sx, (y1 * height + oy) / sy, (x2 * width + ox) / sx, (y2 * height + oy) / sy)
    if Frame(frame) is Frame.THOUSAND:
        return tuple(float(round(v)) for v in out)  # type: ignore[return-value]
    if Frame(frame) is Frame.NORM:
        return (x1, y1, x2, y2)
    return out


def convert(box: BoxT, src: Frame | str, dst: Frame | str, width: int, height: int, **kw: Any) -> BoxT:
    """Convert ``box`` from frame ``src`` to frame ``dst`` via per-axis normalised coordinates."""
    if Frame(src) is Frame(dst) and Frame(src) is not Frame.THOUSAND:
        return tuple(float(v) for v in box)  # type: ignore[return-value]
    return from_norm(to_norm(box, src, width, height, **kw), dst, width, height, **kw)
