"""The original code's format, box and depth rewards, for ``parity: original`` (method spec, section 5).

Re-implemented from the published GRPO-SIF reward code's behaviour, quirks included, so that a run can
reproduce the original numbers and show what each fix changes. The fixed rewards live in
:mod:`sifthinker.rewards.reward_funcs`; where the two differ on inputs a policy actually writes:

* format: the original's check is lenient: text outside ``<think>``/``<answer>`` is allowed, numbers
  are judged on their float value (``0.1000`` has one decimal), booleans pass as 0/1, extra keys and an
  empty box list pass.
* box: areas are read like the original (items without ``bbox_2d`` skipped, coordinates used raw, not
  clipped); an area that fails to parse as P_start drops the progress term.
* depth: ``|D - d| / D <= 0.1`` in float arithmetic (exactly 10% may fail; D = 0 never counts), D the
  float32 mean over ``floor(x1 W)..ceil(x2 W)`` (so a zero-area box covering a pixel can count), and the
  denominator counts stated depths, pairing boxes and depths by position within an area.

Everything works on the float depth map, where the original decoded the colour depth image back to
depth (spec 2.3: that decoding is lossy and not part of the reward's logic).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from sifthinker.method.geometry import hungarian_mean_iou, union_iou

__all__ = ["original_box_score", "original_depth_score", "original_format_ok"]

_AREA_RE = re.compile(r"<area>(.*?)</area>", re.DOTALL)
_FULL = [[0, 0, 1, 1]]


class _Unusable(Exception):
    """A value the original code would have raised on (its rewards catch everything and move on)."""


# ---- format ---------------------------------------------------------------------------------------


def _format_ok(text: str) -> bool:
    think = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    answer = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if not think or not answer or not answer.group(1).strip():
        return False
    body = think.group(1).strip()
    tags = re.findall(r"<(/?\w+)>", body)
    if len(tags) % 4 or any(tags[i : i + 4] != ["area", "/area", "text", "/text"] for i in range(0, len(tags), 4)):
        return False
    if not body.startswith("<area>") or not body.endswith("</text>"):
        return False
    pairs = re.findall(r"<area>(.*?)</area>\s*<text>(.*?)</text>", body, re.DOTALL)
    return bool(pairs) and all(_area_ok(area) and text.strip() for area, text in pairs)


def _area_ok(content: str) -> bool:
    data = json.loads(content.strip())  # a JSON error fails the whole check (see original_format_ok)
    if not isinstance(data, list):
        return False
    for item in data:  # an empty list passes: the original never asked for a box
        if "bbox_2d" not in item or "depth" not in item:
            return False
        bbox, depth = item["bbox_2d"], item["depth"]
        if not (isinstance(bbox, list) and len(bbox) == 4) or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
            return False
        for num in [*bbox, depth]:
            if not isinstance(num, int | float) or not 0.0 <= float(num) <= 1.0:
                return False
            # Decimals as Python prints the float: "0.1000" is 0.1 (one decimal); "1e-05" has no "." part
            # and raised in the original, failing the check.
            if isinstance(num, float) and len(str(num).split(".")[1]) > 3:
                return False
    return True


def original_format_ok(text: Any) -> bool:
    """The original's lenient format check; any error on the way (odd JSON values) fails it."""
    try:
        return isinstance(text, str) and _format_ok(text)
    except Exception:  # the original wrapped its check the same way
        return False


# ---- box --------------------------------------------------------------------------------------------


def _raw_areas(text: str) -> list[list[Any]]:
    """Per area, the raw ``bbox_2d`` values of its items; ``[]`` stands in for a failed read."""
    out = []
    for content in _AREA_RE.findall(text):
        boxes: list[Any] = []
        try:
            data = json.loads(content)
            for item in data if isinstance(data, list) else [data]:
                if "bbox_2d" in item:
                    boxes.append(item["bbox_2d"])
        except Exception:
            boxes.append([])  # kept: a later computation on it fails, as in the original
        out.append(boxes)
    return out


def _box(value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise _Unusable(value)
    if not all(isinstance(v, int | float) for v in value):
        raise _Unusable(value)
    box = tuple(float(v) for v in value)  # a 400-digit integer raises OverflowError, as it did there
    if not all(math.isfinite(v) for v in box):
        raise _Unusable(value)
    return box  # type: ignore[return-value]


def _iou_h(boxes: list[Any], gt: Sequence[tuple[float, float, float, float]]) -> float:
    p = [_box(b) for b in boxes]
    # Raw corners, as the original: an inverted box has no area, so it adds nothing to either term.
    return 0.5 * (union_iou(p, gt) + hungarian_mean_iou(p, gt))


def original_box_score(text: str, gt: Sequence[tuple[float, float, float, float]]) -> float:
    """The original r_box: IoU_h of the last area plus progress over the first area that is not [0,0,1,1]."""
    areas = _raw_areas(text)
    if not areas or not areas[-1]:
        return 0.0
    start = next((a for a in areas if a != _FULL), _FULL)
    try:
        end_iou = _iou_h(areas[-1], gt)
    except Exception:  # the original caught everything: no box reward at all
        return 0.0
    try:
        start_iou = _iou_h(start, gt)
    except Exception:  # the original had already set the end term when the start failed
        return end_iou
    return end_iou + (end_iou - start_iou if end_iou >= start_iou else 0.0)


# ---- depth ------------------------------------------------------------------------------------------


def _raw_depths(text: str) -> list[list[Any]]:
    out = []
    for content in _AREA_RE.findall(text):
        depths: list[Any] = []
        try:
            data = json.loads(content)
            for item in data if isinstance(data, list) else [data]:
                if "depth" in item:
                    depths.append(item["depth"])
        except Exception:
            depths.append([])
        out.append(depths)
    return out


def _mean_depth(depth: np.ndarray, value: Any) -> float:
    x1, y1, x2, y2 = value  # a malformed box raises here, as in the original
    h, w = depth.shape[:2]
    c0, r0 = max(0, min(math.floor(x1 * w), w - 1)), max(0, min(math.floor(y1 * h), h - 1))
    c1, r1 = max(0, min(math.ceil(x2 * w), w)), max(0, min(math.ceil(y2 * h), h))
    if c1 <= c0 or r1 <= r0:
        raise _Unusable(value)
    # float32 mean, as the original computed it on its decoded float32 map.
    return float(np.mean(np.asarray(depth[r0:r1, c0:c1], dtype=np.float32)))


def original_depth_score(text: str, depth: np.ndarray) -> float:
    """The original r_depth: 1/n for each box whose stated depth is within 10% of D(box), n stated depths."""
    boxes, depths = _raw_areas(text), _raw_depths(text)
    total = sum(len(d) for d in depths)
    reward = 0.0
    for i, area in enumerate(boxes):
        for j, value in enumerate(area):
            try:
                true = _mean_depth(depth, value)
                if abs(true - depths[i][j]) / true <= 0.1:
                    reward = reward + 1 / total  # summed one by one, like the original
            except Exception:  # ZeroDivisionError (D = 0), IndexError (no depth at j), bad values
                continue
    return reward
