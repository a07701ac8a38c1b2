"""NMS-AP, OVDEval's metric (spec: benchmarks.md, OVDEval): ground-truth-guided suppression, then COCO AP.

``nms_ap(gt, predictions)`` takes a COCO ground-truth dict (``images``, ``annotations`` with ``bbox``
x, y, w, h in pixels and ``category_id``, ``categories``) and COCO results (``image_id``,
``category_id``, ``bbox`` x, y, w, h pixels, ``score``) and returns fractions: ``AP`` (IoU .50:.95),
``AP50``, ``AP75``, ``APs``/``APm``/``APl``, ``AR1``/``AR10``/``AR100``, ``ARs``/``ARm``/``ARl``
(pycocotools' ``stats[0..11]``) and the counts ``n_predictions``, ``n_kept``.

The procedure is that of OVDEval's ``eval.py`` (om-ai-lab/OVDEval), then pycocotools' ``COCOeval``:

1. Suppression, per image: for every ground-truth box of the image (any category, crowd included), the
   predictions of any label with IoU > ``iou_threshold`` (IoU as the script computes it: x, y, w, h,
   ``union == 0`` gives 0) compete; the one ranked last by numpy's default ``np.argsort`` of their
   scores (ascending, in prediction order) is kept, the others are marked. A prediction kept for some
   ground truth is never removed. On equal scores the winner is whatever that ``argsort`` returns, and
   it depends on the machine: numpy's default sort is not stable, and with its SIMD sorts (x86-simd-sort
   on AVX2/AVX-512 CPUs) ties among as few as four scores do not keep their input order (on this
   project's AVX2 box ``argsort([.9, .9, .5, .5])`` ends with index 0), so the spec's "the
   later-listed prediction wins" is certain only for two or three tied scores. Both implementations
   call ``np.argsort`` on the same array the script builds (the image's scores with numpy's dtype for
   them), so they agree with each other and with the official script on the machine they run on.
   Boxes are read as float64; the script's integer arithmetic on integer boxes gives the same values.
2. COCO AP over the survivors with default bbox parameters (maxDets 1/10/100, 101 recall points, area
   ranges), including pycocotools' own rules, e.g. ties in score ranked in input order, a ground truth
   with ``id`` 0 counts a match to it as a false positive (see :mod:`sifthinker.evaluation.coco_ap`).

Decisions (both implementations): an annotation without ``area`` gets w * h and one without ``iscrowd``
gets 0 (pycocotools would fail on them); a prediction for an image not in ``images`` is an error (as
pycocotools' ``loadRes``); a score must be a finite real number; no predictions at all gives 0 for
every category with ground truth (pycocotools cannot load an empty result list). Values are -1 where
pycocotools gives -1: no category with non-ignored ground truth in that setting (e.g. ``APs`` without
small objects); categories without ground truth are left out of the means, so detections of a label
that has no ground truth anywhere cost nothing (which is why the suppression step exists).

:func:`reference_nms_ap` is the plain reading (Python loops as the official script, then pycocotools,
its printing silenced); :func:`nms_ap` is vectorised (IoU of all ground truth x prediction pairs at
once, a masked segment max, ``argsort`` only for rows whose maximum is tied) and evaluates with
:func:`sifthinker.evaluation.coco_ap.coco_bbox_stats`. They agree exactly; the tests hold them to 1e-9.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import math
import operator
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sifthinker.evaluation.coco_ap import STAT_NAMES, Boxes, coco_bbox_stats

__all__ = ["STAT_NAMES", "nms_ap", "reference_nms_ap", "suppression_mask"]


# ---- inputs ---------------------------------------------------------------------------------------
def _column(rows: Sequence[Mapping[str, Any]], key: str) -> list:
    return list(map(operator.itemgetter(key), rows))  # C-level loop: this runs on every prediction


def _lookup(index: Mapping[Any, int], keys: list) -> np.ndarray:
    """``index[k]`` for every key, -1 for keys not in it, as an int64 array."""
    return np.fromiter(map(index.get, keys, itertools.repeat(-1)), np.int64, len(keys))


def _boxes(raw: list, what: str) -> np.ndarray:
    """(n, 4) float64 x, y, w, h boxes, or a ValueError naming the first entry that is not 4 finite
    numbers. One flat conversion (with a slow search only on failure): this runs on every prediction."""
    try:
        if set(map(len, raw)) <= {4}:
            arr = np.fromiter(itertools.chain.from_iterable(raw), float, 4 * len(raw)).reshape(-1, 4)
            if np.isfinite(arr).all():
                return arr
    except (TypeError, ValueError):
        pass
    for k, b in enumerate(raw):
        try:
            ok = len(b) == 4 and all(math.isfinite(float(v)) for v in b)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"{what} {k}: bbox must be 4 finite numbers (x, y, w, h), got {b!r}")
    raise ValueError(f"{what}s: bboxes are not numbers")


class _Inputs:
    """Checked inputs as columns: annotations (``ann_*``; ``area``/``iscrowd`` filled in) and predictions
    (``bbox``/``score`` float64, ``raw_score`` as given). Columns, not copied dicts: creating thousands of
    containers sets off Python's cyclic garbage collector, which then walks every object alive."""

    def __init__(self, gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]]):
        for key in ("images", "annotations", "categories"):
            if not isinstance(gt.get(key), list):
                raise ValueError(f"gt[{key!r}] must be a list")
        self.gt = gt
        anns = gt["annotations"]
        try:
            self.ann_image_id = _column(anns, "image_id")
            self.ann_category_id = _column(anns, "category_id")
            self.ann_id = _column(anns, "id")
        except (KeyError, TypeError) as e:
            raise ValueError(f"every annotation needs id, image_id, category_id and bbox ({e!r})") from e
        if len(set(self.ann_id)) != len(self.ann_id):  # pycocotools would silently evaluate one twice
            raise ValueError("annotation ids must be unique")
        self.ann_bbox = _boxes([a.get("bbox") for a in anns], "annotation")
        try:
            self.ann_area = np.array([a.get("area", np.nan) for a in anns], float).reshape(-1)
        except (TypeError, ValueError) as e:
            raise ValueError(f"annotation areas must be numbers ({e})") from e
        missing = np.isnan(self.ann_area)
        self.ann_area[missing] = (self.ann_bbox[:, 2] * self.ann_bbox[:, 3])[missing]
        self.ann_crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        try:
            self.image_id = _column(predictions, "image_id")
            self.category_id = _column(predictions, "category_id")
            self.raw_score = _column(predictions, "score")
            raw_bbox = _column(predictions, "bbox")
        except (KeyError, TypeError) as e:
            raise ValueError(f"every prediction needs image_id, category_id, bbox and score ({e!r})") from e
        image_ids = {im["id"] for im in gt["images"]}
        if not set(self.image_id) <= image_ids:
            k = next(k for k, i in enumerate(self.image_id) if i not in image_ids)
            raise ValueError(f"prediction {k}: image_id {self.image_id[k]!r} is not in gt['images']")
        self.bbox = _boxes(raw_bbox, "prediction")
        score = np.array(self.raw_score)
        if not (score.shape == (len(raw_bbox),) and score.dtype.kind in "iuf" and np.isfinite(score).all()):
            k = next((k for k, v in enumerate(self.raw_score)
                      if isinstance(v, bool) or not isinstance(v, int | float | np.number)
                      or not math.isfinite(v)), None)
            raise ValueError(f"prediction {k}: score must be a finite number, got "
                             f"{self.raw_score[k] if k is not None else self.raw_score!r}")
        self.score = score.astype(float)

    def annotation_dicts(self) -> list[dict]:
        """The annotations as given, with ``bbox`` as floats and ``area``/``iscrowd`` filled in."""
        return [{**a, "bbox": b, "area": float(area), "iscrowd": int(a.get("iscrowd", 0))} for a, b, area in
                zip(self.gt["annotations"], self.ann_bbox.tolist(), self.ann_area.tolist(), strict=True)]

    def prediction_dicts(self) -> list[dict]:
        """The predictions as plain COCO result dicts (scores as given: their numpy dtype matters)."""
        return [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in
                zip(self.image_id, self.category_id, self.bbox.tolist(), self.raw_score, strict=True)]


def _result(stats: Sequence[float], n_predictions: int, n_kept: int) -> dict[str, float]:
    out = {name: float(v) for name, v in zip(STAT_NAMES, stats, strict=True)}
    out.update(n_predictions=float(n_predictions), n_kept=float(n_kept))
    return out


# ---- reference: the official procedure as written ------------------------------------------------
def _script_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x, y, w, h box with many, computed as OVDEval's ``calculate_iou``."""
    x1, y1, w1, h1 = box
    x2, y2, w2, h2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    inter = np.maximum(0, np.minimum(x1 + w1, x2 + w2) - np.maximum(x1, x2)) * np.maximum(
        0, np.minimum(y1 + h1, y2 + h2) - np.maximum(y1, y2))
    union = w1 * h1 + w2 * h2 - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union == 0, 0, inter / union)


def _reference_suppress_image(gts: list[dict], preds: list[dict], thr: float) -> list[dict]:
    gt_boxes = np.array([g["bbox"] for g in gts])
    boxes = np.array([p["bbox"] for p in preds])
    scores = np.array([p["score"] for p in preds])
    keep: list[int] = []
    remove: list[int] = []
    for k in range(len(gts)):
        hits = np.where(_script_iou(gt_boxes[k], boxes) > thr)[0].tolist()
        if hits:
            ranked = [hits[j] for j in np.argsort(scores[hits])[::-1].tolist()]
            keep.append(ranked[0])
            remove += ranked[1:]
    removed = {i for i in remove if i not in keep}
    return [p for i, p in enumerate(preds) if i not in removed]


def reference_suppress(annotations: Sequence[dict], predictions: Sequence[dict], thr: float) -> list[dict]:
    """The surviving predictions, image by image in order of first appearance (as the script)."""
    gts: dict[Any, list[dict]] = defaultdict(list)
    per_image: dict[Any, list[dict]] = defaultdict(list)
    for a in annotations:
        gts[a["image_id"]].append(a)
    for p in predictions:
        per_image[p["image_id"]].append(p)
    kept: list[dict] = []
    for image_id, preds in per_image.items():
        kept += _reference_suppress_image(gts.get(image_id, []), preds, thr)
    return kept


def _pycocotools_stats(gt: dict, dets: list[dict]) -> np.ndarray:
    try:  # a test/benchmark dependency only (the dev extra)
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise RuntimeError("reference_nms_ap needs pycocotools: pip install pycocotools") from e

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))  # loadRes writes into the dicts it gets
        else:  # what loadRes would build; it cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=float)


def reference_nms_ap(gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]],
                     iou_threshold: float = 0.5) -> dict[str, float]:
    """NMS-AP the plain way: the official suppression loop, then pycocotools (needs the dev extra)."""
    inp = _Inputs(gt, predictions)
    preds, anns = inp.prediction_dicts(), inp.annotation_dicts()
    kept = reference_suppress(anns, preds, iou_threshold)
    return _result(_pycocotools_stats({**gt, "annotations": anns}, kept), len(preds), len(kept))


# ---- fast: vectorised suppression and evaluation --------------------------------------------------
def _tie_winners(cands: np.ndarray, dtypes: np.ndarray | None, scores: np.ndarray,
                 raw: Sequence[Any]) -> np.ndarray:
    """The winner of each tied row of candidate prediction indices (``cands``, rows of one length).

    The script sorts its image's score array indexed by the candidates, and that array has numpy's dtype
    for the image's scores; ``dtypes`` gives it per row (None: float64 everywhere, the usual case). Rows
    of one dtype go through one row-wise ``np.argsort``, the same kernel as a 1-D call per row.
    """
    out = np.empty(len(cands), np.int64)
    kinds = np.zeros(len(cands), "U8") if dtypes is None else dtypes
    for dts in np.unique(kinds):
        sel = np.flatnonzero(kinds == dts)
        c = cands[sel]
        if dtypes is None or np.dtype(str(dts)) == np.float64:
            vals = scores[c]
        else:
            vals = np.asarray([[raw[i] for i in row] for row in c.tolist()], dtype=np.dtype(str(dts)))
        out[sel] = c[np.arange(len(sel)), np.argsort(vals, axis=1)[:, -1]]
    return out


def fast_suppress(g_image: np.ndarray, g_box: np.ndarray, p_image: np.ndarray, p_box: np.ndarray,
                  scores: np.ndarray, raw: Sequence[Any], thr: float) -> np.ndarray:
    """Keep mask over the predictions (same result as :func:`reference_suppress`); ``raw``: the scores
    as given, ``scores`` as float64."""
    n = len(p_image)
    keep = np.ones(n, bool)
    if n == 0 or len(g_image) == 0:
        return keep
    by_image = np.argsort(p_image, kind="stable")  # prediction order within an image, as the script
    counts = np.bincount(p_image, minlength=int(max(p_image.max(), g_image.max())) + 1)
    first = np.cumsum(counts) - counts
    per_gt = counts[g_image]
    pair_gt = np.repeat(np.arange(len(g_image)), per_gt)
    within = np.arange(int(per_gt.sum())) - np.repeat(np.cumsum(per_gt) - per_gt, per_gt)
    pair_p = by_image[np.repeat(first[g_image], per_gt) + within]
    gb, pb = g_box[pair_gt], p_box[pair_p]
    inter = np.maximum(0, np.minimum(gb[:, 0] + gb[:, 2], pb[:, 0] + pb[:, 2]) - np.maximum(gb[:, 0], pb[:, 0])) \
        * np.maximum(0, np.minimum(gb[:, 1] + gb[:, 3], pb[:, 1] + pb[:, 3]) - np.maximum(gb[:, 1], pb[:, 1]))
    union = gb[:, 2] * gb[:, 3] + pb[:, 2] * pb[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union == 0, 0, inter / union)
    hit = iou > thr
    pg, pp = pair_gt[hit], pair_p[hit]
    if len(pp) == 0:
        return keep
    starts = np.flatnonzero(np.r_[True, pg[1:] != pg[:-1]])
    lens = np.diff(np.r_[starts, len(pg)])
    s = scores[pp]
    top = np.repeat(np.maximum.reduceat(s, starts), lens)
    at_top = s == top
    n_top = np.add.reduceat(at_top.astype(np.int64), starts)
    last_top = np.maximum.reduceat(np.where(at_top, np.arange(len(s)), -1), starts)
    winners = pp[last_top]  # right whenever the maximum is unique
    tied = np.flatnonzero(n_top > 1)
    if len(tied):
        dtypes = None
        if set(map(type, raw)) != {float}:  # else every image's array is float64: no per-image look
            image_dtype: dict[int, str] = {}
            for img in np.unique(p_image[pp[starts[tied]]]).tolist():
                members = by_image[first[img] : first[img] + counts[img]].tolist()
                image_dtype[img] = np.asarray([raw[j] for j in members]).dtype.str
            dtypes = np.array([image_dtype[i] for i in p_image[pp[starts[tied]]].tolist()])
        for k in np.unique(lens[tied]).tolist():
            rows = tied[lens[tied] == k]
            cands = pp[starts[rows][:, None] + np.arange(k)]
            winners[rows] = _tie_winners(cands, None if dtypes is None else dtypes[lens[tied] == k],
                                         scores, raw)
    removed = np.zeros(n, bool)
    removed[pp] = True
    removed[winners] = False
    return ~removed


def _indexed(inp: _Inputs) -> tuple[dict, dict, np.ndarray, np.ndarray, np.ndarray]:
    """Image and category indices (sorted ids, as COCOeval orders them), annotations of known images."""
    image_ids = sorted({im["id"] for im in inp.gt["images"]})
    img_index = {i: k for k, i in enumerate(image_ids)}
    cat_index = {c: k for k, c in enumerate(sorted({c["id"] for c in inp.gt["categories"]}))}
    # Annotations of unknown images never meet a prediction (those are refused) nor count in COCOeval.
    g_img = _lookup(img_index, inp.ann_image_id)
    g_in = g_img >= 0
    return img_index, cat_index, g_in, g_img[g_in], _lookup(img_index, inp.image_id)


def suppression_mask(gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]],
                     iou_threshold: float = 0.5, *, reference: bool = False) -> list[bool]:
    """Which predictions survive the suppression step (fast path, or the reference loop)."""
    inp = _Inputs(gt, predictions)
    if reference:
        preds = inp.prediction_dicts()
        kept = {id(p) for p in reference_suppress(inp.annotation_dicts(), preds, iou_threshold)}
        return [id(p) in kept for p in preds]
    _, _, g_in, g_img, p_img = _indexed(inp)
    return fast_suppress(g_img, inp.ann_bbox[g_in], p_img, inp.bbox, inp.score, inp.raw_score,
                         iou_threshold).tolist()


def nms_ap(gt: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]],
           iou_threshold: float = 0.5) -> dict[str, float]:
    """NMS-AP (see the module docstring): suppression guided by the ground truth, then COCO AP."""
    inp = _Inputs(gt, predictions)
    img_index, cat_index, g_in, g_img, p_img = _indexed(inp)
    g_box = inp.ann_bbox[g_in]
    keep = fast_suppress(g_img, g_box, p_img, inp.bbox, inp.score, inp.raw_score, iou_threshold)

    g_cat = _lookup(cat_index, inp.ann_category_id)[g_in]
    p_cat = _lookup(cat_index, inp.category_id)
    g_ok, p_ok = g_cat >= 0, keep & (p_cat >= 0)
    gt_boxes = Boxes(
        image=g_img[g_ok], category=g_cat[g_ok], xywh=g_box[g_ok], area=inp.ann_area[g_in][g_ok],
        crowd=inp.ann_crowd[g_in][g_ok],
        nonzero_id=np.array([i != 0 for i in inp.ann_id], bool)[g_in][g_ok],
    )
    xywh = inp.bbox[p_ok]
    dt_boxes = Boxes(image=p_img[p_ok], category=p_cat[p_ok], xywh=xywh, area=xywh[:, 2] * xywh[:, 3],
                     score=inp.score[p_ok])
    stats = coco_bbox_stats(gt_boxes, dt_boxes, len(img_index), len(cat_index))
    return _result(stats, len(p_img), int(keep.sum()))
