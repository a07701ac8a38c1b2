"""Vectorised COCO bbox evaluation with pycocotools' ``COCOeval`` semantics, exactly (numpy only).

The fast half of :mod:`sifthinker.evaluation.nms_ap`; its results equal ``COCOeval(...).stats`` bit for
bit on the inputs ``nms_ap`` accepts (the tests compare them on random data). What is reproduced:

* per (image, category): detections sorted by score, ties in input order (pycocotools' mergesort), only
  the first 100 kept; IoU as pycocotools' C ``bbIou`` (a crowd ground truth divides by the detection's
  area); ground truth is ignored when crowd or its ``area`` field is outside the area range;
* greedy matching per IoU threshold ``t`` (capped at ``1 - 1e-10``) in score order: a detection takes,
  among the ground truth not yet taken (crowd can be taken again) with IoU >= t, the non-ignored one
  with the highest IoU (on equal IoU the later one in annotation order), and only when there is none an
  ignored one by the same rule. A detection matched to a ground truth whose ``id`` is 0 counts as
  unmatched (pycocotools stores the matched id and tests it for non-zero), yet that ground truth is taken;
* an unmatched detection outside the area range is ignored; per category the detections of all images
  are ranked by score (ties: image id, then per-image order), precision is made monotone from the right
  and read at 101 recall points (0 past the last recall reached); recall is the final one;
* a category with no non-ignored ground truth is -1 and left out of the means; a summary with nothing
  to average is -1.

Why it is fast: every step runs on whole arrays. The matching is sequential only within an (image,
category) group, so it proceeds in rounds: round r takes, in every group at once, the r-th detection that
has any candidate (IoU >= 0.5), for all area ranges and thresholds together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AREA_RANGES", "IOU_THRESHOLDS", "MAX_DETS", "RECALL_THRESHOLDS", "STAT_NAMES", "Boxes",
           "coco_bbox_stats"]

# pycocotools' Params for bbox, computed the same way (the values must be bit-identical).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))  # all, small, medium, large
MAX_DETS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class Boxes:
    """Ground truth or detections as arrays, in input order. ``image``/``category``: indices into the
    sorted image ids and category ids; ``xywh`` float64 (n, 4); ``area`` (ground truth: the annotation's
    field; detections: w * h); ``score`` (detections); ``crowd`` and ``nonzero_id`` (ground truth)."""

    image: np.ndarray
    category: np.ndarray
    xywh: np.ndarray
    area: np.ndarray
    score: np.ndarray | None = None
    crowd: np.ndarray | None = None
    nonzero_id: np.ndarray | None = None


def _segments(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal values in a sorted 1-D array."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.diff(np.r_[starts, len(keys)])


def _ragged(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs ``[starts[i], starts[i] + counts[i])``: (run index, position) of every element."""
    run = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return run, np.repeat(starts, counts) + offset


def _bb_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` for paired rows of xywh boxes (same operations, so the same doubles)."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    i = w * h
    da = d[:, 2] * d[:, 3]
    u = np.where(crowd, da, da + g[:, 2] * g[:, 3] - i)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), i / u, 0.0)


def _match(gt: Boxes, dt: Boxes, d_key: np.ndarray, g_key: np.ndarray, g_ignore: np.ndarray) -> np.ndarray:
    """Index of the ground truth each detection matches, per area range and threshold (A, T, nd); -1 none.

    ``d_key`` must be sorted (group, then score order); ``g_key`` is the groups of the ground truth.
    """
    A, T, nd = len(AREA_RANGES), len(IOU_THRESHOLDS), len(d_key)
    match = np.full((A, T, nd), -1, np.int32)
    g_order = np.argsort(g_key, kind="stable")  # annotation order within a group
    g_sorted = g_key[g_order]
    lo = np.searchsorted(g_sorted, d_key, "left")
    det, pos = _ragged(lo, np.searchsorted(g_sorted, d_key, "right") - lo)
    gti = g_order[pos]
    iou = _bb_iou(dt.xywh[det], gt.xywh[gti], gt.crowd[gti])
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    cand = iou >= thr[0]  # nothing below the lowest threshold can ever match
    det, gti, iou = det[cand], gti[cand], iou[cand]
    if len(det) == 0:
        return match
    # The round of a pair: how many earlier detections of its group also have candidates.
    rel, rel_len = _segments(det)
    rel_det = det[rel]
    grp_start, grp_len = _segments(d_key[rel_det])
    rank = np.arange(len(rel_det)) - np.repeat(grp_start, grp_len)
    pair_round = np.repeat(rank, rel_len)
    by_round = np.argsort(pair_round, kind="stable")
    r_start, r_len = _segments(pair_round[by_round])
    taken = np.zeros((A, T, len(gt.image)), bool)
    for s, n in zip(r_start.tolist(), r_len.tolist(), strict=True):
        sel = by_round[s : s + n]  # one detection per group, its pairs in annotation order
        d, g, v = det[sel], gti[sel], iou[sel]
        seg, seg_len = _segments(d)
        ig = g_ignore[:, g][:, None, :]  # (A, 1, p)
        free = ~taken[:, :, g] | gt.crowd[g]
        ok = free & (v >= thr[:, None])[None]
        best_reg = np.maximum.reduceat(np.where(ok & ~ig, v, -1.0), seg, axis=2)
        best_ign = np.maximum.reduceat(np.where(ok & ig, v, -1.0), seg, axis=2)
        use_reg = best_reg >= 0
        best = np.where(use_reg, best_reg, best_ign)
        pick = ok & (ig != np.repeat(use_reg, seg_len, axis=2)) & (v == np.repeat(best, seg_len, axis=2))
        last = np.maximum.reduceat(np.where(pick, np.arange(len(d)), -1), seg, axis=2)  # ties: later gt
        a, t, k = np.nonzero(best >= 0)
        chosen = g[last[a, t, k]]
        match[a, t, d[seg[k]]] = chosen
        taken[a, t, chosen] = True
    return match


def _first_reaching(npig: np.ndarray) -> np.ndarray:
    """(S, R): the least true-positive count c with ``c / npig >= recall threshold`` in float64.

    ``c / npig`` rounds monotonically in c, so recall >= r exactly when the count reaches this value.
    """
    n = npig[:, None].astype(np.int64)
    c = np.clip(np.ceil(RECALL_THRESHOLDS[None] * n).astype(np.int64), 0, n)
    while (down := (c > 0) & ((c - 1) / n >= RECALL_THRESHOLDS)).any():
        c -= down
    while (up := c / n < RECALL_THRESHOLDS).any():
        c += up
    return c


def _area_scores(tp: np.ndarray, counted: np.ndarray, ranked: np.ndarray, rank: np.ndarray, cat: np.ndarray,
                 npig: np.ndarray, K: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Precision (T, R, K) at maxDets 100 and recall (T, K) per maxDets, for one area range.

    ``tp``/``counted`` (T, nd): true positive / not ignored; ``ranked``: detection indices in ranking
    order (category, score, image, per-image order). Precision is read from the true positives alone:
    between two of them precision only falls (false positives) or stays (ignored detections), so the
    suffix maximum from the first position reaching a recall is the maximum over the true positives
    from there on, and at recall 0 over all of them (0 with none), as COCOeval's envelope gives.
    """
    T, R = tp.shape[0], len(RECALL_THRESHOLDS)
    recall: dict[int, np.ndarray] = {}
    for m in MAX_DETS:
        sel = ranked[rank[ranked] < m]
        sel = sel[npig[cat[sel]] > 0]
        t_idx, i_idx = np.nonzero(tp[:, sel])  # in (threshold, rank) order
        counts = np.bincount(t_idx * K + cat[sel][i_idx], minlength=T * K).reshape(T, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall[m] = np.where(npig > 0, counts / npig, -1.0)
    prec = np.full((T, R, K), -1.0)
    prec[:, :, npig > 0] = 0.0
    if len(t_idx) == 0:
        return prec, recall
    c = cat[sel]
    starts, lens = _segments(c)
    first = np.repeat(starts, lens)[i_idx]  # start of each true positive's category run
    ok_cum = np.cumsum(counted[:, sel], axis=1)
    n_ok = ok_cum[t_idx, i_idx] - np.where(first > 0, ok_cum[t_idx, np.maximum(first - 1, 0)], 0)
    key = t_idx * K + c[i_idx]
    g_start, g_len = _segments(key)
    tp_n = np.arange(len(key)) - np.repeat(g_start, g_len) + 1
    tpf, fpf = tp_n.astype(float), (n_ok - tp_n).astype(float)
    pr = tpf / (fpf + tpf + np.spacing(1))  # COCOeval's expression, so the same doubles
    g_t, g_c = key[g_start] // K, key[g_start] % K
    need = _first_reaching(npig[g_c])  # (G, R)
    valid = need <= g_len[:, None]
    end = (g_start + g_len)[:, None]
    pos = np.where(valid, g_start[:, None] + np.maximum(need, 1) - 1, end)
    # Maxima between consecutive positions (a lone element where they coincide), then a right-to-left
    # running max; the sentinel keeps the last end in range.
    bounds = np.concatenate([pos, end], axis=1).ravel()
    mx = np.maximum.reduceat(np.append(pr, 0.0), bounds).reshape(len(g_start), R + 1)[:, :R]
    mx = np.where(valid, mx, -np.inf)
    env = np.flip(np.maximum.accumulate(np.flip(mx, 1), axis=1), 1)
    prec[g_t, :, g_c] = np.where(valid, env, 0.0)
    return prec, recall


def _mean(s: np.ndarray) -> float:
    # Same selection and order as COCOeval.summarize, so np.mean sums the same sequence.
    return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0


def coco_bbox_stats(gt: Boxes, dt: Boxes, n_images: int, n_categories: int) -> np.ndarray:
    """``COCOeval(...).stats`` (12 values, names in :data:`STAT_NAMES`) for bbox, default parameters.

    ``gt`` holds only annotations of known images and categories, ``dt`` only detections of known
    categories; both in input order (that order breaks ties, as in pycocotools).
    """
    A, K = len(AREA_RANGES), n_categories
    lo = np.array([a for a, _ in AREA_RANGES], float)[:, None]
    hi = np.array([b for _, b in AREA_RANGES], float)[:, None]
    g_ignore = gt.crowd[None] | (gt.area[None] < lo) | (gt.area[None] > hi)  # (A, ng)
    # Non-ignored ground truth per (area range, category): the recall denominators.
    npig = np.stack([np.bincount(gt.category[~ig], minlength=K) for ig in g_ignore]).reshape(A, K)

    # Per (category, image) group: score order, ties in input order; only the first maxDets[-1] count.
    nd = len(dt.image)
    d_group = dt.category.astype(np.int64) * max(n_images, 1) + dt.image
    order = np.lexsort((np.arange(nd), -dt.score, d_group))
    starts, lens = _segments(d_group[order])
    rank = np.arange(nd) - np.repeat(starts, lens)
    keep = rank < MAX_DETS[-1]
    order, rank = order[keep], rank[keep]
    d = Boxes(dt.image[order], dt.category[order], dt.xywh[order], dt.area[order], dt.score[order])
    g_group = gt.category.astype(np.int64) * max(n_images, 1) + gt.image
    match = _match(gt, d, d_group[order], g_group, g_ignore)

    # Index -1 (no match) reads a trailing "no ground truth" entry: not a hit, not ignored.
    nonzero_id = np.append(gt.nonzero_id, False)
    ignore_ext = np.concatenate([g_ignore, np.zeros((A, 1), bool)], axis=1)
    # Ranking for accumulation: category, score, image, per-image order (pycocotools concatenates the
    # images in id order, then sorts stably on score).
    ranked = np.lexsort((np.arange(len(rank)), d.image, -d.score, d.category))
    d_out = (d.area[None] < lo) | (d.area[None] > hi)  # (A, nd)
    precision, recall = {}, {}
    for a in range(A):
        hit = nonzero_id[match[a]]
        on_ignored = ignore_ext[a][match[a]]
        counted = ~(on_ignored | (~hit & d_out[a]))
        precision[a], rec = _area_scores(hit & counted, counted, ranked, rank, d.category, npig[a], K)
        recall.update({(a, m): v for m, v in rec.items()})

    stats = np.zeros(len(STAT_NAMES))
    top = MAX_DETS[-1]
    stats[0] = _mean(precision[0])
    for i, thr in ((1, 0.5), (2, 0.75)):
        stats[i] = _mean(precision[0][np.where(thr == IOU_THRESHOLDS)[0]])
    for i, a in ((3, 1), (4, 2), (5, 3)):
        stats[i] = _mean(precision[a])
    for i, m in ((6, MAX_DETS[0]), (7, MAX_DETS[1]), (8, top)):
        stats[i] = _mean(recall[0, m])
    for i, a in ((9, 1), (10, 2), (11, 3)):
        stats[i] = _mean(recall[a, top])
    return stats
