"""SIF-Bench: our synthetic held-out split (a folder written by ``sifthinker data build``) as benchmark items.

Files: ``root/records.json`` (schema in docs/architecture.md) with the images, colour depth images and
float depth maps it names, all relative to ``root``. ``limit`` keeps the first N records.

Item per record: ``id``, ``category``, ``question`` = ``problem``, ``answer`` = ``response``,
``options`` (a letter -> text dict, when the record has one), ``images`` = [the RGB image], ``boxes`` =
the normalised GT boxes (``normalized_solution_round.bbox_3d``) in pixels, ``width``/``height``,
``source``; ``extra`` holds ``depth_image`` and ``depth_map`` (relative to ``root``: the runner gives the
model the record's own depth image rather than one from a depth provider), ``answer_type``,
``candidates`` when present, and ``data_dir``, the absolute folder loaded, because ``score`` gets no
root and needs the depth maps.

Prompt: the question itself (the SIF instruction is added by :mod:`sifthinker.method.prompts`).

Scoring reuses :mod:`sifthinker.evaluation.metrics` item by item (each item is turned back into the
record fields ``score_item`` reads; GT boxes back to per-axis normalised coordinates): answer score with
``answers.score_answer``, Acc@0.5 (IoU >= 0.5, metrics' rule) of the last parseable area's boxes, depth
consistency against the depth map, strict format validity. Metrics: ``overall`` = ``accuracy`` (mean
answer score; ``accuracy`` keeps the existing gate key), ``category/<name>``, ``format_validity``,
``format_failures`` (no ``<answer>``, or a blank one), ``grounding_acc50``, ``mean_iou``, ``n_grounding``,
``depth_consistency``, ``n_depth``, ``n``, ``skipped`` (always 0).

* ``strict``: metrics' rules; a missing or blank answer scores 0.
* ``original``: E1 of the original SpatialBench script: a missing or blank ``<answer>`` is replaced by
  the ground truth, so it scores 1. Everything else (grounding, depth, format validity) is unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sifthinker.data.build import load_records
from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring, wilson
from sifthinker.evaluation.benchmarks.parsing import require_responses
from sifthinker.evaluation.metrics import ItemScore, aggregate, gt_boxes, score_item
from sifthinker.method.depth import load_depth_map
from sifthinker.method.geometry import Frame, from_norm, to_norm

__all__ = ["BENCHMARK", "SIFBench"]

NAME = "sif-bench"
_REQUIRED = ("id", "category", "problem", "response", "image", "width", "height")


def _item(rec: Mapping[str, Any], data_dir: Path) -> Item:
    missing = [k for k in _REQUIRED if rec.get(k) in (None, "")]
    if missing:
        raise ValueError(f"record {rec.get('id')!r}: missing {', '.join(missing)}")
    if rec.get("box_frame", "norm") != "norm":  # every conversion below assumes per-axis normalised boxes
        raise ValueError(f"record {rec['id']!r}: box_frame {rec['box_frame']!r}, expected 'norm'")
    w, h = int(rec["width"]), int(rec["height"])
    boxes = [list(from_norm(b, Frame.PIXEL, w, h)) for b in gt_boxes(dict(rec))]
    extra: dict[str, Any] = {"depth_image": rec.get("depth_image"), "depth_map": rec.get("depth_map"),
                             "answer_type": rec.get("answer_type"), "data_dir": str(data_dir)}
    if isinstance(rec.get("candidates"), list):
        extra["candidates"] = list(rec["candidates"])
    options = rec.get("options")
    return Item(
        id=str(rec["id"]), benchmark=NAME, category=str(rec["category"]), question=str(rec["problem"]),
        images=[str(rec["image"])], options=dict(options) if isinstance(options, dict) else None,
        answer=str(rec["response"]), boxes=boxes or None, width=w, height=h,
        source=rec.get("source") or rec.get("dataset"), extra=extra,
    )


def _record(item: Item) -> dict[str, Any]:
    """The record fields :func:`~sifthinker.evaluation.metrics.score_item` reads, rebuilt from an item."""
    rec: dict[str, Any] = {"id": item.id, "category": item.category, "response": item.answer or "",
                           "answer_type": item.extra.get("answer_type")}
    if item.options:
        rec["options"] = item.options
    if isinstance(item.extra.get("candidates"), list):
        rec["candidates"] = item.extra["candidates"]
    if item.boxes:
        if not item.width or not item.height:
            raise ValueError(f"item {item.id!r} has boxes but no image size")
        rec["normalized_solution_round"] = {
            "bbox_3d": [list(to_norm(tuple(b), Frame.PIXEL, item.width, item.height)) for b in item.boxes]}
    return rec


def _depth_map(item: Item) -> np.ndarray | None:
    rel = item.extra.get("depth_map")
    if not rel:
        return None  # no depth map: depth consistency is not computed for this item (metrics' n_depth)
    path = Path(item.extra.get("data_dir") or ".") / rel
    if not path.is_file():
        raise FileNotFoundError(f"item {item.id!r}: depth map {path} not found")
    return load_depth_map(path)


class SIFBench:
    """The ``sif-bench`` benchmark: a built SIF dataset folder (normally the pipeline's eval split)."""

    name = NAME

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root).resolve()
        records = load_records(root)
        return [_item(r, root) for r in (records[:limit] if limit is not None else records)]

    def prompt(self, item: Item) -> str:
        return item.question

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        require_responses(items, responses)  # a dropped generation must not be scored as a model's failure
        scores: list[ItemScore] = []
        results: list[ItemResult] = []
        for it in items:
            resp = responses[it.id]
            s = score_item(_record(it), resp if isinstance(resp, str) else "", _depth_map(it))
            no_answer = not (s.answer or "").strip()
            note = ""
            if no_answer and scoring is Scoring.ORIGINAL:
                s = replace(s, answer_score=1.0, correct=True)  # E1: the GT stands in for a missing answer
                note = "no <answer>: counted correct (E1)"
            elif no_answer:
                note = "no <answer>"
            scores.append(s)
            results.append(ItemResult(id=it.id, category=it.category, correct=s.correct, format_failure=no_answer,
                                      parsed=s.answer, iou=s.grounding_iou, note=note))
        return _summarise(scores, results, scoring)


def _summarise(scores: list[ItemScore], results: list[ItemResult], scoring: Scoring) -> BenchmarkScore:
    agg = aggregate(scores)
    n = len(scores)
    metrics: dict[str, float] = {
        "overall": agg["accuracy"], "accuracy": agg["accuracy"], "n": agg["n"], "skipped": 0.0,
        "format_validity": agg["format_validity"], "format_failures": float(sum(r.format_failure for r in results)),
        "grounding_acc50": agg["grounding_acc50"], "mean_iou": agg["mean_iou"], "n_grounding": agg["n_grounding"],
        "depth_consistency": agg["depth_consistency"], "n_depth": agg["n_depth"],
    }
    # aggregate() names categories accuracy/<name>; the benchmark form is category/<name>.
    metrics.update({f"category/{k.split('/', 1)[1]}": v for k, v in agg.items() if k.startswith("accuracy/")})
    by_cat: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        by_cat[s.category].append(s.answer_score)
    total = sum(s.answer_score for s in scores)
    grounded = [s for s in scores if s.grounding_iou is not None]
    intervals = {
        "overall": wilson(total, n), "accuracy": wilson(total, n),
        "format_validity": wilson(sum(s.format_valid for s in scores), n),
        "grounding_acc50": wilson(sum(bool(s.grounding_hit) for s in grounded), len(grounded)),
        **{f"category/{c}": wilson(sum(v), len(v)) for c, v in sorted(by_cat.items())},
    }
    notes = []
    if scoring is Scoring.ORIGINAL:
        k = sum(r.format_failure for r in results)
        notes.append(f"original scoring (E1): {k} item(s) without an <answer> counted as correct")
    return BenchmarkScore(benchmark=NAME, scoring=scoring, metrics=metrics, items=results,
                          intervals=intervals, notes=notes)


BENCHMARK = SIFBench()
