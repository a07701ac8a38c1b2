"""Reverse expansion, forward inference: the focus frames of a SIF trajectory (spec section 2).

Boxes here are pixel boxes (x1, y1, x2, y2) in the original image until `to_steps` normalises them,
because the expansion step is defined in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sifthinker.depth import mean_depth

PxBox = tuple[float, float, float, float]
FrameKind = Literal["full", "distractor", "merged", "expanded", "gt"]

MAX_EXPANSIONS = 5


@dataclass(frozen=True)
class TrajectoryConfig:
    """Knobs of the builder; the defaults are the paper's."""

    max_expansions: int = MAX_EXPANSIONS
    distractor_prob: float = 0.5
    distractor_enlarge: float = 1.2
    distractor_scale: tuple[float, float] = (0.7, 1.3)
    distractor_tries: int = 1000
    min_steps: int = 3


DEFAULT_CONFIG = TrajectoryConfig()


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


def _overlap(a: PxBox, b: PxBox) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _union_box(a: PxBox, b: PxBox) -> PxBox:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


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


def expansion_step(boxes: list[PxBox], width: int, height: int, remaining: int) -> float:
    """Step in pixels: max(rx*W/k, ry*H/k, 1) with the spec's rx, ry from the normalised boxes."""
    rx = 1.0 - max(b[0] for b in boxes) / width - min(b[2] for b in boxes) / width
    ry = 1.0 - max(b[1] for b in boxes) / height - min(b[3] for b in boxes) / height
    return max(rx * width / remaining, ry * height / remaining, 1.0)


def reverse_expand(gt: list[PxBox], width: int, height: int, max_expansions: int = MAX_EXPANSIONS) -> list[list[PxBox]]:
    """Frames from the GT outward: frame 0 = GT, then grown/clipped/merged frames, ending at the full image.

    When a single box remains with >= 2 expansions left, a fast expansion (right/bottom sides grown by half
    the remaining margin) and the full image finish the sequence early, as in the original.
    """
    full: PxBox = (0.0, 0.0, float(width), float(height))
    frames = [list(gt)]
    boxes = list(gt)
    for i in range(max_expansions):
        remaining = max_expansions - i
        step = expansion_step(boxes, width, height, remaining)
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
    original: PxBox, width: int, height: int, rng: np.random.Generator, cfg: TrajectoryConfig = DEFAULT_CONFIG
) -> PxBox | None:
    """A wrong region of similar size touching a corner of `original` without overlapping it."""
    w0, h0 = original[2] - original[0], original[3] - original[1]
    scale = cfg.distractor_enlarge * rng.uniform(*cfg.distractor_scale)
    w, h = min(w0 * scale, float(width)), min(h0 * scale, float(height))
    x1, y1, x2, y2 = original
    # Diagonal neighbours: each shares exactly one corner point with the original box.
    corners = [(x1 - w, y1 - h), (x2, y1 - h), (x1 - w, y2), (x2, y2)]
    order = rng.permutation(len(corners))
    for k in order:
        cx, cy = corners[k]
        if cx >= 0 and cy >= 0 and cx + w <= width and cy + h <= height:
            return (cx, cy, cx + w, cy + h)
    for _ in range(cfg.distractor_tries):
        cx = rng.uniform(0.0, max(width - w, 0.0))
        cy = rng.uniform(0.0, max(height - h, 0.0))
        cand = (cx, cy, cx + w, cy + h)
        if _iou(cand, original) < 0.001:
            return cand
    return None


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
    frames = reverse_expand(gt, width, height, cfg.max_expansions)
    expanded = frames[1]
    distractor = place_distractor(enclosing(gt), width, height, rng, cfg)
    use_distractor = distractor is not None and rng.random() < cfg.distractor_prob

    full: PxBox = (0.0, 0.0, float(width), float(height))
    raw: list[tuple[FrameKind, list[PxBox]]] = [("full", [full])]
    if use_distractor:
        raw.append(("distractor", [distractor]))
    if len(expanded) > 1:
        raw.append(("merged", [enclosing(expanded)]))
    raw.append(("expanded", expanded))
    raw.append(("gt", list(gt)))

    steps: list[FocusStep] = []
    for kind, boxes in raw:
        norm = normalize_boxes(boxes, width, height)
        if steps and set(steps[-1].boxes) == set(norm):
            # A frame equal to the next adds nothing (e.g. evidence that fills the image): keep the later one.
            steps.pop()
        depths = tuple(round(mean_depth(depth_rel, b), 3) for b in norm)
        steps.append(FocusStep(kind, norm, depths))
    return Trajectory(steps=steps, expansions=frames, distractor=distractor)
