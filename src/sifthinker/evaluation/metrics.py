"""Pure scoring of generated SIF traces against dataset records (no model, no files written).

Per item (one record, one prediction):

* ``format_valid``: :func:`sifthinker.method.trace.validate` finds no problem.
* ``answer_score``: :func:`sifthinker.method.answers.score_answer` of the *leniently* extracted answer against
  ``record["response"]`` with ``record["answer_type"]``; a missing answer scores 0 (spec E1/E4).
* ``grounding_iou``: :func:`sifthinker.method.geometry.union_iou` of the last parseable area's boxes with the GT
  boxes (``normalized_solution_round.bbox_3d``), predicted boxes clipped to [0, 1] as r_box does; for
  one box each it is plain IoU. A hit is IoU >= 0.5
  (Acc@0.5). The last area is read leniently, like the rewards, so a format slip does not hide a box.
* ``depth_consistency``: over every predicted box of every parseable area, the fraction whose stated
  depth ``d`` passes :func:`sifthinker.rewards.reward_funcs.depth_ok` (``|d - D| <= 0.1 * max(D, 1e-3)``, the r_depth
  rule), ``D`` = mean true depth in the box (clipped to the image) from ``record["depth_map"]``. Unlike
  r_depth, a box that is empty after clipping (inverted, off-image) counts as inconsistent instead of
  being given a one-pixel depth; a prediction with no parseable box scores 0 (as r_depth does).

Aggregates (:attr:`EvalScores.metrics`): ``n``, ``format_validity``, ``accuracy`` (mean answer score),
``accuracy/<category>``, ``grounding_acc50`` and ``mean_iou`` (over items with GT boxes, counted in
``n_grounding``), ``depth_consistency`` (mean over items with a depth map, ``n_depth``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sifthinker.method import answers as sif_answers
from sifthinker.method import trace as sif_trace
from sifthinker.method.depth import load_depth_map, mean_depth
from sifthinker.method.geometry import clip_box, union_iou
from sifthinker.rewards.reward_funcs import depth_ok

__all__ = ["EvalScores", "ItemScore", "depth_consistency", "gt_boxes", "nms_ap", "score_item", "score_predictions"]

BoxT = tuple[float, float, float, float]
IOU_THRESHOLD = 0.5


@dataclass
class ItemScore:
    id: str
    category: str
    format_valid: bool
    answer: str | None
    answer_score: float
    correct: bool
    grounding_iou: float | None  # None: the record has no GT boxes
    grounding_hit: bool | None
    depth_consistency: float | None  # None: the record has no depth map
    n_boxes: int  # predicted boxes over all parseable areas
    format_problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalScores:
    items: list[ItemScore]
    metrics: dict[str, float]


def gt_boxes(record: dict) -> list[BoxT]:
    """The record's normalised GT boxes (``normalized_solution_round.bbox_3d``); [] when absent."""
    nsr = record.get("normalized_solution_round") or {}
    raw = nsr.get("bbox_3d") if isinstance(nsr, dict) else None
    return [tuple(float(v) for v in b) for b in raw or [] if isinstance(b, list | tuple) and len(b) == 4]


def depth_consistency(boxes: Sequence[sif_trace.Box], depth_map: np.ndarray) -> float:
    """Fraction of ``boxes`` whose stated depth is within 10% (relative) of the true mean depth."""
    if not boxes:
        return 0.0
    ok = 0
    for b in boxes:
        x1, y1, x2, y2 = clip_box(b.xyxy(), 1.0, 1.0)
        if not (x2 > x1 and y2 > y1 and math.isfinite(b.depth)):
            continue  # empty, inverted or off-image box: there is no true depth to agree with
        ok += depth_ok(b.depth, mean_depth(depth_map, (x1, y1, x2, y2)))
    return ok / len(boxes)


def score_item(
    record: dict,
    prediction: str,
    depth_map: np.ndarray | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> ItemScore:
    """Score one prediction against its record (see the module docstring)."""
    problems = sif_trace.validate(prediction)
    answer = sif_trace.extract_answer(prediction)
    kwargs: dict[str, Any] = {}
    if isinstance(record.get("options"), dict):
        kwargs["options"] = record["options"]
    if isinstance(record.get("candidates"), list):
        kwargs["candidates"] = record["candidates"]
    a_score = float(sif_answers.score_answer(answer, str(record.get("response", "")),
                                             record.get("answer_type"), **kwargs))
    areas = sif_trace.extract_areas(prediction)
    gts = gt_boxes(record)
    iou: float | None = None
    if gts:
        iou = union_iou([clip_box(b.xyxy(), 1.0, 1.0) for b in areas[-1]], gts) if areas else 0.0
    all_boxes = [b for area in areas for b in area]
    dc = depth_consistency(all_boxes, depth_map) if depth_map is not None else None
    return ItemScore(
        id=str(record.get("id", "")),
        category=str(record.get("category") or "unknown"),
        format_valid=not problems,
        answer=answer,
        answer_score=a_score,
        correct=a_score >= 1.0,
        grounding_iou=iou,
        grounding_hit=None if iou is None else iou >= iou_threshold,
        depth_consistency=dc,
        n_boxes=len(all_boxes),
        format_problems=problems[:5],
    )


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def aggregate(items: Sequence[ItemScore]) -> dict[str, float]:
    """The run-level metrics of a list of item scores (names in the module docstring)."""
    m: dict[str, float] = {"n": float(len(items))}
    m["format_validity"] = _mean([float(i.format_valid) for i in items])
    m["accuracy"] = _mean([i.answer_score for i in items])
    by_cat: dict[str, list[float]] = defaultdict(list)
    for i in items:
        by_cat[i.category].append(i.answer_score)
    for cat in sorted(by_cat):
        m[f"accuracy/{cat}"] = _mean(by_cat[cat])
    grounded = [i for i in items if i.grounding_iou is not None]
    m["n_grounding"] = float(len(grounded))
    m["grounding_acc50"] = _mean([float(bool(i.grounding_hit)) for i in grounded])
    m["mean_iou"] = _mean([i.grounding_iou for i in grounded])  # type: ignore[misc]
    with_depth = [i.depth_consistency for i in items if i.depth_consistency is not None]
    m["n_depth"] = float(len(with_depth))
    m["depth_consistency"] = _mean(with_depth)  # type: ignore[arg-type]
    return m


def score_predictions(
    records: Sequence[dict],
    predictions: Sequence[str],
    root: str | Path,
    iou_threshold: float = IOU_THRESHOLD,
) -> EvalScores:
    """Score ``predictions[i]`` against ``records[i]``; ``record["depth_map"]`` is relative to ``root``.

    Raises ValueError when the lengths differ (a dropped generation must not shift every later score).
    """
    if len(records) != len(predictions):
        raise ValueError(f"{len(records)} records but {len(predictions)} predictions")
    root = Path(root)
    items = []
    for rec, pred in zip(records, predictions, strict=True):
        dm = load_depth_map(root / rec["depth_map"]) if rec.get("depth_map") else None
        items.append(score_item(rec, pred if isinstance(pred, str) else "", dm, iou_threshold))
    return EvalScores(items=items, metrics=aggregate(items))

from sifthinker.evaluation.nms_ap import nms_ap  # noqa: E402,F401
