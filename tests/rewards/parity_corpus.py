"""Seeded corpora of completions for the side-by-side reward tests (tests/rewards/test_grpo_parity.py).

Each case is ``(kind, text, gt_boxes, depth_map)``. Kinds: ``well-formed`` (strictly valid traces,
rendered by :func:`sifthinker.method.trace.render`), the three divergences the D4 fixes removed
(``bad-last-area``, ``no-depth``, ``inverted``), and ``malformed`` (mutations the original code meets
in real rollouts). Stated depths sit around the true D, never within 1e-5 of the 10% boundary in
either float precision, and maps have no zeros, so the two documented rulings (exactly 10%, D = 0)
stay out of the agreement counts; tests/rewards/test_grpo_parity.py checks them separately. No coordinate is a
numeric string or non-finite: the original's result there depended on shapely's coercions.
"""

from __future__ import annotations

import json

import numpy as np

from sifthinker.method import trace as sif
from sifthinker.method.depth import box_pixels, mean_depth

BoxT = tuple[float, float, float, float]


def depth_map(rng: np.random.Generator) -> np.ndarray:
    """A smooth random relative-depth map in [0.02, 1], stored as float16 and read back as float32."""
    h, w = [(24, 32), (30, 40), (48, 64)][rng.integers(3)]
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    field = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
    for _ in range(rng.integers(1, 4)):
        cy, cx, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        field += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    field = (field - field.min()) / max(np.ptp(field), 1e-6)
    return (0.02 + 0.98 * field).astype(np.float16).astype(np.float32)


def _box(rng: np.random.Generator, near: BoxT | None = None) -> BoxT:
    while True:
        if near is not None and rng.random() < 0.7:
            jitter = rng.normal(0, 0.04, 4) if rng.random() < 0.8 else np.zeros(4)
            x1, y1, x2, y2 = np.clip(np.array(near) + jitter, 0, 1)
        else:
            x1, y1 = rng.uniform(0, 0.85, 2)
            x2, y2 = x1 + rng.uniform(0.03, 0.6), y1 + rng.uniform(0.03, 0.6)
        b = tuple(round(float(min(v, 1.0)), 3) for v in (x1, y1, x2, y2))
        if b[2] > b[0] and b[3] > b[1]:
            return b  # type: ignore[return-value]


def _f32_mean(arr: np.ndarray, box: BoxT) -> float:
    c0, r0, c1, r1 = box_pixels(box, arr.shape[1], arr.shape[0])
    return float(np.mean(arr[r0:r1, c0:c1]))


def stated_depth(rng: np.random.Generator, arr: np.ndarray, box: BoxT) -> float:
    """A 3-decimal depth around D(box), half of them within 10%, none within 1e-5 of the boundary."""
    d64, d32 = mean_depth(arr, box), _f32_mean(arr, box)
    while True:
        d = round(min(1.0, max(0.0, d64 * (1 + rng.uniform(-0.22, 0.22)))), 3)
        if all(abs(abs(d - true) / true - 0.1) > 1e-5 for true in (d64, d32)):
            return d


def gt_boxes(rng: np.random.Generator) -> list[BoxT]:
    return [_box(rng) for _ in range(rng.integers(1, 4))]


def well_formed(rng: np.random.Generator, arr: np.ndarray, gt: list[BoxT]) -> sif.Trace:
    steps = []
    if rng.random() < 0.6:
        steps.append(sif.Step((sif.Box(0, 0, 1, 1, stated_depth(rng, arr, (0, 0, 1, 1))),), "I look at the image."))
    for k in range(rng.integers(1, 5)):
        boxes = [_box(rng, gt[int(rng.integers(len(gt)))]) for _ in range(rng.integers(1, 4))]
        steps.append(sif.Step(tuple(sif.Box(*b, stated_depth(rng, arr, b)) for b in boxes), f"Step {k + 1}."))
    return sif.Trace(tuple(steps), ["yes", "red cube", "2"][rng.integers(3)])


def _items(step: sif.Step) -> list[dict]:
    return [{"bbox_2d": list(b.xyxy()), "depth": b.depth} for b in step.boxes]


def write(areas: list[str], texts: list[str], answer: str) -> str:
    body = "\n".join(f"<area>{a}</area>\n<text>{t}</text>" for a, t in zip(areas, texts, strict=True))
    return f"<think>\n{body}\n</think>\n<answer>{answer}</answer>"


def _parts(t: sif.Trace) -> tuple[list[list[dict]], list[str]]:
    return [_items(s) for s in t.steps], [s.text for s in t.steps]


_GARBAGE = ['[{"bbox_2d": [0.1, 0.2', "none", "[{bbox_2d: [0.1, 0.2, 0.3, 0.4]}]", "",
            '[{"bbox_2d": [0.1, 0.2, 0.3, 0.4], "depth": 0.5},]', "[]", "[0.1, 0.2, 0.3, 0.4"]


def bad_last_area(rng: np.random.Generator, t: sif.Trace) -> str:
    items, texts = _parts(t)
    areas = [json.dumps(i) for i in items]
    areas[-1] = _GARBAGE[rng.integers(len(_GARBAGE))]
    return write(areas, texts, t.answer)


def no_depth(rng: np.random.Generator, t: sif.Trace) -> str:
    items, texts = _parts(t)
    for area in items:
        for item in area:
            if rng.random() < 0.5:
                del item["depth"]
    if all("depth" in item for area in items for item in area):
        del items[-1][0]["depth"]
    return write([json.dumps(i) for i in items], texts, t.answer)


def inverted(rng: np.random.Generator, t: sif.Trace, arr: np.ndarray) -> str:
    """A box with swapped corners (wider than a pixel), stated at the depth the old reader credited it."""
    items, texts = _parts(t)
    h, w = arr.shape
    while True:
        x1, y1, x2, y2 = _box(rng)
        if x2 - x1 > 2 / w and y2 - y1 > 2 / h:
            break
    swapped = [(x2, y1, x1, y2), (x1, y2, x2, y1), (x2, y2, x1, y1)][rng.integers(3)]
    # The old reader clipped (x1, y1, max(x1, x2), max(y1, y2)): a one-pixel line at the first corner.
    collapsed = (swapped[0], swapped[1], max(swapped[0], swapped[2]), max(swapped[1], swapped[3]))
    item = {"bbox_2d": list(swapped), "depth": round(mean_depth(arr, collapsed), 3)}
    area = items[int(rng.integers(len(items)))]
    area.insert(int(rng.integers(len(area) + 1)), item)
    return write([json.dumps(i) for i in items], texts, t.answer)


# Non-finite numbers (NaN, Infinity, 1e400) are left out: what the original did with an infinite corner
# depended on shapely's polygons (not installed here); parity original reads one as an unusable box.
_VALUES = ["true", "false", "null", "-0.2", "1.4", "0.1000", "0.12345", "1e-05",
           "3", '"x"', "[]", "{}"]


def malformed(rng: np.random.Generator, t: sif.Trace, arr: np.ndarray) -> str:
    items, texts = _parts(t)
    areas = [json.dumps(i) for i in items]
    answer = t.answer
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(12))
        i = int(rng.integers(len(areas)))
        if kind == 0:  # a number replaced by an odd JSON value
            nums = [k for k, _ in enumerate(areas[i]) if areas[i][k].isdigit()]
            if nums:
                k = nums[int(rng.integers(len(nums)))]
                areas[i] = areas[i][:k] + _VALUES[int(rng.integers(len(_VALUES)))] + areas[i][k + 1:]
        elif kind == 1:  # an extra key, or one missing
            data = [dict(item) for item in items[i]]
            if rng.random() < 0.5:
                data[0]["extra"] = 1
            else:
                del data[0]["bbox_2d" if rng.random() < 0.5 else "depth"]
            areas[i] = json.dumps(data)
        elif kind == 2:  # a lone object instead of a list
            areas[i] = json.dumps(items[i][0])
        elif kind == 3:  # non-object items
            areas[i] = json.dumps([items[i][0], ["bbox_2d"], 5, "text"][: int(rng.integers(1, 5))])
        elif kind == 4:  # a zero-area box (often inside one pixel)
            x = round(float(rng.uniform(0, 1)), 3)
            areas[i] = json.dumps([{"bbox_2d": [x, 0.2, x, 0.6], "depth": 0.5}])
        elif kind == 5:  # a sub-pixel inverted box
            x = round(float(rng.uniform(0.01, 0.99)), 3)
            areas[i] = json.dumps([{"bbox_2d": [x + 0.001, 0.3, x, 0.6], "depth": round(mean_depth(
                arr, (x, 0.3, x + 0.001, 0.6)), 3)}])
        elif kind == 6:  # text outside the tags, or a missing closing tag
            return (f"Sure. {write(areas, texts, answer)} Done." if rng.random() < 0.5
                    else write(areas, texts, answer).replace("</answer>", ""))
        elif kind == 7:  # a truncated completion
            full = write(areas, texts, answer)
            return full[: int(rng.integers(1, len(full)))]
        elif kind == 8:  # an empty text or answer
            texts[i] = " "
            answer = answer if rng.random() < 0.5 else ""
        elif kind == 9:  # a nested area tag
            areas[i] = "<area>" + areas[i]
        elif kind == 10:  # boxes outside the image
            areas[i] = json.dumps([{"bbox_2d": [-0.3, 0.1, 0.6, 1.3], "depth": 0.5}])
        else:  # an area dropped, so two texts follow each other
            if len(areas) > 1:
                del areas[i]
                texts[i - 1] += "</text><text>more"
                del texts[i]
    return write(areas, texts, answer)


def _case(kind: str, rng: np.random.Generator, t: sif.Trace, arr: np.ndarray) -> str:
    if kind == "well-formed":
        return sif.render(t)
    if kind == "bad-last-area":
        return bad_last_area(rng, t)
    if kind == "no-depth":
        return no_depth(rng, t)
    return inverted(rng, t, arr) if kind == "inverted" else malformed(rng, t, arr)


def corpus(seed: int, n_well: int, n_each: int, n_malformed: int) -> list[tuple[str, str, list[BoxT], np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    counts = {"well-formed": n_well, "bad-last-area": n_each, "no-depth": n_each, "inverted": n_each,
              "malformed": n_malformed}
    for kind, n in counts.items():
        for _ in range(n):
            arr = depth_map(rng)
            gt = gt_boxes(rng)
            out.append((kind, _case(kind, rng, well_formed(rng, arr, gt), arr), gt, arr))
    return out
