"""Reverse expansion, forward inference: the focus frames of a SIF trajectory (spec section 2).

Boxes here are pixel boxes (x1, y1, x2, y2) in the original image until they are normalised, because
the expansion step is defined in pixels.

Two rules differ between our builds and the original code (method spec, section 5):

* D2, the expansion step: the original's ``rx = 1 - max(x1) - min(x2)`` is 0 for a centred box, so
  its step is 1 pixel and the "expanded" frame is the GT again. New builds use the free margin,
  ``rx = 1 - (max(x2) - min(x1))`` (``step_rule="margin"``); ``"original"`` reproduces SIF-50K.
* D3, the distractor: it is placed against the merged first-expansion box (frame 1, or the union of
  its boxes), as in the original, so the "wrong region" never covers the region the trace focuses on
  next. Fixed builds also require zero overlap in the fallback placement and drop a distractor that
  rounding would make overlap the next frame; ``distractor_rule="original"`` keeps the original's
  ``IoU < 0.001`` fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sifthinker.method.depth import mean_depth

PxBox = tuple[float, float, float, float]
FrameKind = Literal["full", "distractor", "merged", "expanded", "gt"]

MAX_EXPANSIONS = 5


@dataclass(frozen=True)
class TrajectoryConfig:
    """Knobs of the builder; the defaults are the paper's, with the D2/D3 fixes."""

    max_expansions: int = MAX_EXPANSIONS
    distractor_prob: float = 0.5
    distractor_enlarge: float = 1.2
    distractor_scale: tuple[float, float] = (0.7, 1.3)
    distractor_tries: int = 1000
    min_steps: int = 3
    step_rule: Literal["margin", "original"] = "margin"
    distractor_rule: Literal["strict", "original"] = "strict"


DEFAULT_CONFIG = TrajectoryConfig()
ORIGINAL_CONFIG = TrajectoryConfig(step_rule="original", distractor_rule="original")


def trajectory_config(parity: str) -> TrajectoryConfig:
    """The builder's rules for a run's ``parity`` (``fixed`` or ``original``)."""
    return ORIGINAL_CONFIG if parity == "original" else DEFAULT_CONFIG


@dataclass(frozen=True)
class FocusStep:
    """One frame of the forward trajectory: its role and normalised boxes with their mean depth."""

    kind: FrameKind
    boxes: tuple[PxBox, ...]  # per-axis normalised, rounded to 3 decimals
    depths: tuple[float, ...]


@dataclass
class Trajectory:
    steps: list[FocusStep]
    expansions: list[list[PxBox]] = field(default_factory=list)  # reverse frames, pixels, for inspection
    distractor: PxBox | None = None  # pixels, whether or not it became a frame
    area_ratio: float = 1.0  # area of the expanded frame / area of the GT boxes (1.0: a degenerate expansion)


def _overlap(a: PxBox, b: PxBox) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _union_box(a: PxBox, b: PxBox) -> PxBox:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _area(boxes: list[PxBox]) -> float:
    return sum(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) for b in boxes)


def enclosing(boxes: list[PxBox]) -> PxBox:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def merge_overlapping(boxes: list[PxBox]) -> list[PxBox]:
    """Replace every group of overlapping boxes by its enclosing box, until none overlap."""
    out = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                if _overlap(out[i], out[j]):
                    out[i] = _union_box(out[i], out[j])
                    del out[j]
                    changed = True
                    break
            if changed:
                break
    return out


def expansion_step(boxes: list[PxBox], width: int, height: int, remaining: int, rule: str = "margin") -> float:
    """Step in pixels: ``max(rx*W/k, ry*H/k, 1)``; ``rx``, ``ry`` by the margin rule or the original's (D2)."""
    if rule == "original":
        rx = 1.0 - max(b[0] for b in boxes) / width - min(b[2] for b in boxes) / width
        ry = 1.0 - max(b[1] for b in boxes) / height - min(b[3] for b in boxes) / height
    else:
        rx = 1.0 - (max(b[2] for b in boxes) - min(b[0] for b in boxes)) / width
        ry = 1.0 - (max(b[3] for b in boxes) - min(b[1] for b in boxes)) / height
    return max(rx * width / remaining, ry * height / remaining, 1.0)


def reverse_expand(gt: list[PxBox], width: int, height: int, max_expansions: int = MAX_EXPANSIONS,
                   rule: str = "margin") -> list[list[PxBox]]:
    """Frames from the GT outward: frame 0 = GT, then grown/clipped/merged frames, ending at the full image.

    When a single box remains with >= 2 expansions left, a fast expansion (right/bottom sides grown by half
    the remaining margin) and the full image finish the sequence early, as in the original.
    """
    full: PxBox = (0.0, 0.0, float(width), float(height))
    frames = [list(gt)]
    boxes = list(gt)
    for i in range(max_expansions):
        remaining = max_expansions - i
        step = expansion_step(boxes, width, height, remaining, rule)
        grown = [
            (max(0.0, b[0] - step), max(0.0, b[1] - step), min(float(width), b[2] + step), min(float(height), b[3] + step))
            for b in boxes
        ]
        boxes = merge_overlapping(grown)
        frames.append(boxes)
        if boxes == [full]:
            return frames
        if len(boxes) == 1 and remaining - 1 >= 2:
            b = boxes[0]
            fast = (b[0], b[1], b[2] + (width - b[2]) / 2.0, b[3] + (height - b[3]) / 2.0)
            frames.append([fast])
            frames.append([full])
            return frames
    if frames[-1] != [full]:
        frames.append([full])
    return frames


def _iou(a: PxBox, b: PxBox) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def place_distractor(
    anchor: PxBox, width: int, height: int, rng: np.random.Generator, cfg: TrajectoryConfig = DEFAULT_CONFIG
) -> PxBox | None:
    """A wrong region of similar size touching a corner of ``anchor`` without overlapping it."""
    w0, h0 = anchor[2] - anchor[0], anchor[3] - anchor[1]
    scale = cfg.distractor_enlarge * rng.uniform(*cfg.distractor_scale)
    w, h = min(w0 * scale, float(width)), min(h0 * scale, float(height))
    x1, y1, x2, y2 = anchor
    # Diagonal neighbours: each shares exactly one corner point with the anchor.
    corners = [(x1 - w, y1 - h), (x2, y1 - h), (x1 - w, y2), (x2, y2)]
    for k in rng.permutation(len(corners)):
        cx, cy = corners[k]
        if cx >= 0 and cy >= 0 and cx + w <= width and cy + h <= height:
            return (cx, cy, cx + w, cy + h)
    # Random placements, all drawn at once: one vectorised test instead of up to 1000 Python iterations.
    n = cfg.distractor_tries
    cx = rng.uniform(0.0, max(width - w, 0.0), n)
    cy = rng.uniform(0.0, max(height - h, 0.0), n)
    inter = (np.clip(np.minimum(cx + w, x2) - np.maximum(cx, x1), 0.0, None)
             * np.clip(np.minimum(cy + h, y2) - np.maximum(cy, y1), 0.0, None))
    if cfg.distractor_rule == "original":
        ok = inter / (w * h + w0 * h0 - inter) < 0.001
    else:
        ok = inter <= 0.0
    hits = np.flatnonzero(ok)
    if not len(hits):
        return None
    i = int(hits[0])
    return (float(cx[i]), float(cy[i]), float(cx[i]) + w, float(cy[i]) + h)


def normalize_boxes(boxes: list[PxBox], width: int, height: int) -> tuple[PxBox, ...]:
    """Per-axis normalisation to 3 decimals, keeping x2 > x1 and y2 > y1 after rounding."""
    out = []
    for b in boxes:
        x1, y1 = round(b[0] / width, 3), round(b[1] / height, 3)
        x2, y2 = round(b[2] / width, 3), round(b[3] / height, 3)
        x2 = max(x2, round(x1 + 0.001, 3))
        y2 = max(y2, round(y1 + 0.001, 3))
        out.append((max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2)))
    return tuple(out)


def build_trajectory(
    gt: list[PxBox],
    depth_rel: np.ndarray,
    rng: np.random.Generator,
    cfg: TrajectoryConfig = DEFAULT_CONFIG,
) -> Trajectory:
    """Forward frames: full -> (distractor) -> (merged union) -> expanded GT -> GT, with box depths."""
    if not gt:
        raise ValueError("a trajectory needs at least one ground-truth box")
    height, width = depth_rel.shape[:2]
    frames = reverse_expand(gt, width, height, cfg.max_expansions, cfg.step_rule)
    expanded = frames[1]
    distractor = place_distractor(enclosing(expanded), width, height, rng, cfg)
    use_distractor = distractor is not None and rng.random() < cfg.distractor_prob

    full: PxBox = (0.0, 0.0, float(width), float(height))
    raw: list[tuple[FrameKind, list[PxBox]]] = [("full", [full])]
    if use_distractor:
        raw.append(("distractor", [distractor]))
    if len(expanded) > 1:
        raw.append(("merged", [enclosing(expanded)]))
    raw.append(("expanded", expanded))
    raw.append(("gt", list(gt)))

    normed = [(kind, normalize_boxes(boxes, width, height)) for kind, boxes in raw]
    if use_distractor and cfg.distractor_rule == "strict" and any(
            _overlap(normed[1][1][0], b) for b in normed[2][1]):
        del normed[1]  # rounding to 3 decimals made it touch the next frame: a wrong region must not
    steps: list[FocusStep] = []
    for kind, norm in normed:
        if steps and set(steps[-1].boxes) == set(norm):
            # A frame equal to the next adds nothing (e.g. evidence that fills the image): keep the later one.
            steps.pop()
        depths = tuple(round(mean_depth(depth_rel, b), 3) for b in norm)
        steps.append(FocusStep(kind, norm, depths))
    gt_area = _area(list(gt))
    ratio = _area(expanded) / gt_area if gt_area > 0 else 1.0
    return Trajectory(steps=steps, expansions=frames, distractor=distractor, area_ratio=ratio)
