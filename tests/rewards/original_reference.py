"""A reference re-implementation of the ORIGINAL GRPO-SIF rewards, for side-by-side tests only.

Written from reading the authors' published reward code (their Qwen2.5-VL module on R1-V/open-r1):
same control flow, same exception handling, same arithmetic, none of its text. It is the oracle the
product is compared with: :mod:`sifthinker.rewards.reward_funcs` (fixed) must agree with it on every well-formed
completion and on the three divergences the fixes removed; :mod:`sifthinker.rewards.original`
(``parity: original``) must agree with it everywhere. Two liberties, both outside the reward logic:
the union area uses an exact sweep instead of shapely (not installed), and the depth map is the float
map instead of the colour image decoded back to depth (method spec 2.3).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
from scipy.optimize import linear_sum_assignment

from sifthinker.method.geometry import union_area


# ---- format: the lenient check --------------------------------------------------------------------
def _check(text):
    t = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    a = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if not t or not a:
        return False
    body, ans = t.group(1).strip(), a.group(1).strip()
    if not ans:
        return False
    tags = re.findall(r"<(/?\w+)>", body)
    if len(tags) % 4 != 0:
        return False
    for i in range(0, len(tags), 4):
        if tags[i:i + 4] != ["area", "/area", "text", "/text"]:
            return False
    if not body.startswith("<area>") or not body.endswith("</text>"):
        return False
    pairs = re.findall(r"<area>(.*?)</area>\s*<text>(.*?)</text>", body, re.DOTALL)
    if not pairs:
        return False
    for area_text, text_part in pairs:
        try:
            data = json.loads(area_text.strip())
        except json.JSONDecodeError:
            return False
        if not isinstance(data, list):
            return False
        for item in data:
            if "bbox_2d" not in item:
                return False
            if "depth" not in item:
                return False
            bbox = item["bbox_2d"]
            if not (isinstance(bbox, list) and len(bbox) == 4):
                return False
            if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
                return False
            for c in bbox:
                if not isinstance(c, (int, float)):  # noqa: UP038 - as written there
                    return False
                if not (0.0 <= float(c) <= 1.0):
                    return False
            d = item["depth"]
            if not isinstance(d, (int, float)):  # noqa: UP038
                return False
            if not (0.0 <= float(d) <= 1.0):
                return False
            for num in bbox + [d]:
                if isinstance(num, float):
                    if len(str(num).split(".")[1]) > 3:
                        return False
        if not text_part.strip():
            return False
    return True


def format_reward(text):
    try:
        ok = _check(text)
    except Exception:
        ok = False
    return 1.0 if ok else 0.0


# ---- boxes and depths as the original extracted them ---------------------------------------------
def _extract(text, key):
    result = []
    for area_str in re.findall(r"<area>(.*?)</area>", text, re.DOTALL):
        values = []
        try:
            data = json.loads(area_str)
            if isinstance(data, list):
                for item in data:
                    if key in item:
                        values.append(item[key])
            else:
                if key in data:
                    values.append(data[key])
        except Exception:
            values.append([])
        result.append(values)
    return result


def _single_iou(b1, b2):
    b1 = [float(x) for x in b1]
    b2 = [float(x) for x in b2]
    xl, yt = max(b1[0], b2[0]), max(b1[1], b2[1])
    xr, yb = min(b1[2], b2[2]), min(b1[3], b2[3])
    if xr < xl or yb < yt:
        return 0.0
    inter = (xr - xl) * (yb - yt)
    a1 = (b1[2] - b1[0]) * (b1[3] - b1[1])
    a2 = (b2[2] - b2[0]) * (b2[3] - b2[1])
    union = a1 + a2 - inter
    return inter / union if union != 0 else 0.0


def _pair_iou(pred, gt):
    if not pred and not gt:
        return 1.0
    if not pred or not gt:
        return 0.0
    m = np.array([[_single_iou(p, g) for g in gt] for p in pred])
    rows, cols = linear_sum_assignment(-m)
    return float(m[rows, cols].sum() / min(len(pred), len(gt)))


def _global_iou(pred, gt):
    def valid(boxes):
        out = []
        for box in boxes:
            x1, y1, x2, y2 = box
            if x2 <= x1 or y2 <= y1:
                continue
            out.append((float(x1), float(y1), float(x2), float(y2)))
        return out

    p, g = valid(pred), valid(gt)
    if not p and not g:
        return 1.0
    if not p or not g:
        return 0.0
    inters = []
    for a in p:
        for b in g:
            x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
            if x2 > x1 and y2 > y1:
                inters.append((x1, y1, x2, y2))
    inter = union_area(inters)
    union = union_area(p) + union_area(g) - inter
    return float(inter / union) if union != 0 else 0.0


def box_reward(text, gt):
    """The original's box reward with progress (its 'bboxaccuracy_w_progress')."""
    reward = 0.0
    try:
        areas = _extract(text, "bbox_2d")
        start = [[0, 0, 1, 1]]
        for a in areas:
            if a != [[0, 0, 1, 1]]:
                start = a
                break
        end = areas[-1]
        if end:
            end_iou = (_global_iou(end, gt) + _pair_iou(end, gt)) / 2
            reward = end_iou
            start_iou = (_global_iou(start, gt) + _pair_iou(start, gt)) / 2
            progress = end_iou - start_iou if end_iou >= start_iou else 0.0
            reward = reward + progress
    except Exception:
        pass
    return reward


def _avg_depth(depth, box):
    h, w = depth.shape[:2]
    x1, y1, x2, y2 = box
    c0, r0 = int(math.floor(x1 * w)), int(math.floor(y1 * h))
    c1, r1 = int(math.ceil(x2 * w)), int(math.ceil(y2 * h))
    c0, r0 = max(0, min(c0, w - 1)), max(0, min(r0, h - 1))
    c1, r1 = max(0, min(c1, w)), max(0, min(r1, h))
    if c1 <= c0 or r1 <= r0:
        raise ValueError("empty box")
    return float(np.mean(depth[r0:r1, c0:c1]))


def depth_reward(text, depth):
    """The original's depth-consistency reward; ``depth`` a float32 map."""
    reward = 0.0
    try:
        boxes, depths = _extract(text, "bbox_2d"), _extract(text, "depth")
        total = 0
        for d in depths:
            total += len(d)
        for i, area in enumerate(boxes):
            for j, box in enumerate(area):
                try:
                    true = _avg_depth(depth, box)
                    if abs(true - depths[i][j]) / true <= 0.1:
                        reward = reward + 1 / total
                except Exception:
                    continue
    except Exception:
        pass
    return reward


def progress_store_update(record, key, group_rewards):
    """The original trainer's bookkeeping after a step: the bonus-included mean, skipped when 0."""
    mean = sum(group_rewards) / len(group_rewards)
    if mean:
        record[key] = mean
