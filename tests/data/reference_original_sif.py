"""A re-implementation of the ORIGINAL SIFThinker data builder's frame logic, for side-by-side tests.

Written from the published description and behaviour of the authors' ``data_generation`` scripts
(reverse expansion in normalised floats with integer pixel snapshots, the one-pass pairwise merge,
the select step that expands a box by 20%, rescales it by U(0.7, 1.3) and moves it to a free corner,
and the forward order). It is a reference for comparison only: the product code is
``sifthinker.data.trajectory``. Randomness comes from a ``random.Random`` as in the original.
"""

from __future__ import annotations

import random

Box = list[float]


def step_px(boxes: list[Box], width: int, height: int, remaining: int) -> float:
    """The original's step: rx = 1 - max(x1) - min(x2) (normalised), ry likewise; at least 1 pixel."""
    rx = 1 - max(b[0] for b in boxes) - min(b[2] for b in boxes)
    ry = 1 - max(b[1] for b in boxes) - min(b[3] for b in boxes)
    return max(rx * width / remaining, ry * height / remaining, 1)


def _snapshot(boxes: list[Box], width: int, height: int) -> list[list[int]]:
    return [[int(b[0] * width), int(b[1] * height), int(b[2] * width), int(b[3] * height)] for b in boxes]


def _merge_pass(boxes: list[Box]) -> tuple[list[Box], bool]:
    """One pass: each box merges with the first later overlapping box not yet taken."""
    taken = [False] * len(boxes)
    out: list[Box] = []
    merged = False
    for i in range(len(boxes)):
        if taken[i]:
            continue
        x1, y1, x2, y2 = boxes[i]
        for j in range(i + 1, len(boxes)):
            if taken[j]:
                continue
            x3, y3, x4, y4 = boxes[j]
            if x1 < x4 and x2 > x3 and y1 < y4 and y2 > y3:
                out.append([min(x1, x3), min(y1, y3), max(x2, x4), max(y2, y4)])
                taken[i] = taken[j] = merged = True
                break
        if not taken[i]:
            out.append(boxes[i])
    return out, merged


def expand(gt_norm: list[Box], width: int, height: int, n: int = 5) -> list[list[list[int]]]:
    """Integer pixel snapshots of every frame (frame 0 = GT); only frames 0 and 1 are used later."""
    cur = [list(b) for b in gt_norm]
    frames = [_snapshot(cur, width, height)]
    done = 0
    while done < n:
        step = step_px(cur, width, height, n - done)
        grown = [[max(0, b[0] - step / width), max(0, b[1] - step / height),
                  min(1, b[2] + step / width), min(1, b[3] + step / height)] for b in cur]
        merged = True
        while merged:
            grown, merged = _merge_pass(grown)
        cur = grown
        frames.append(_snapshot(cur, width, height))
        done += 1
        if len(cur) == 1 and n - done >= 2:
            fx, fy = (1 - cur[0][2]) * width, (1 - cur[0][3]) * height
            cur = [[max(0, cur[0][0] - fx / 2 / width), max(0, cur[0][1] - fy / 2 / height),
                    min(1, cur[0][2] + fx / 2 / width), min(1, cur[0][3] + fy / 2 / height)]]
            frames.append(_snapshot(cur, width, height))
            frames.append(_snapshot([[0, 0, 1, 1]], width, height))
            break
    return frames[: n + 1]


def iou(a: Box, b: Box) -> float:
    iw, ih = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else 0


def _about_centre(box: Box, factor: float) -> Box:
    w, h = (box[2] - box[0]) * factor, (box[3] - box[1]) * factor
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return [max(0, cx - w / 2), max(0, cy - h / 2), min(1, cx + w / 2), min(1, cy + h / 2)]


def _shift(box: Box, dx: float, dy: float) -> Box:
    return [max(0, min(1, box[0] + dx)), max(0, min(1, box[1] + dy)),
            max(0, min(1, box[2] + dx)), max(0, min(1, box[3] + dy))]


def select(anchor: Box, rnd: random.Random) -> Box:
    """The distractor: 20% larger, rescaled by U(0.7, 1.3), moved to a free corner (else random)."""
    scaled = _about_centre(_about_centre(anchor, 1.2), rnd.uniform(0.7, 1.3))
    sw, sh = scaled[2] - scaled[0], scaled[3] - scaled[1]
    ox1, oy1, ox2, oy2 = anchor
    options = []
    if ox2 + sw <= 1 and oy2 + sh <= 1:
        options.append((ox2 - scaled[0], oy2 - scaled[1]))
    if ox2 + sw <= 1 and oy1 - sh >= 0:
        options.append((ox2 - scaled[0], oy1 - sh - scaled[1]))
    if ox1 - sw >= 0 and oy2 + sh <= 1:
        options.append((ox1 - sw - scaled[0], oy2 - scaled[1]))
    if ox1 - sw >= 0 and oy1 - sh >= 0:
        options.append((ox1 - sw - scaled[0], oy1 - sh - scaled[1]))
    if options:
        out = _shift(scaled, *rnd.choice(options))
    else:
        out = scaled
        sx1, sy1, sx2, sy2 = scaled
        area_a = (ox2 - ox1) * (oy2 - oy1)
        for _ in range(1000):  # the same draws and test as _shift + iou, inlined: this loop is the hot spot
            dx, dy = rnd.uniform(-sx1, 1 - sx2), rnd.uniform(-sy1, 1 - sy2)
            x1, y1 = max(0, min(1, sx1 + dx)), max(0, min(1, sy1 + dy))
            x2, y2 = max(0, min(1, sx2 + dx)), max(0, min(1, sy2 + dy))
            inter = max(0, min(ox2, x2) - max(ox1, x1)) * max(0, min(oy2, y2) - max(oy1, y1))
            union = area_a + (x2 - x1) * (y2 - y1) - inter
            if (inter / union if union != 0 else 0) < 0.001:
                out = [x1, y1, x2, y2]
                break
    return [round(v, 3) for v in out]


def frames(gt_norm: list[Box], width: int, height: int, rnd: random.Random) -> list[tuple[str, list[Box]]]:
    """The forward frames as the original emits them: full, (distractor), (merged), expanded, GT."""
    snaps = expand(gt_norm, width, height)
    norm = [[[round(b[0] / width, 3), round(b[1] / height, 3), round(b[2] / width, 3), round(b[3] / height, 3)]
             for b in f] for f in snaps]
    out: list[tuple[str, list[Box]]] = [("gt", norm[0]), ("expanded", norm[1])]
    if len(norm[1]) > 1:
        anchor = [min(b[0] for b in norm[1]), min(b[1] for b in norm[1]),
                  max(b[2] for b in norm[1]), max(b[3] for b in norm[1])]
        out.append(("merged", [anchor]))
    else:
        anchor = norm[1][0]
    distractor = select(anchor, rnd)
    if rnd.choice([1, 2, 3, 4]) in (1, 2) and iou(anchor, distractor) < 0.001:
        out.append(("distractor", [distractor]))
    out.append(("full", [[0.0, 0.0, 1.0, 1.0]]))
    return out[::-1]
