"""NMS-AP: hand-computed cases, the official tie rule, and the fast path against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from sifthinker.evaluation import metrics
from sifthinker.evaluation.nms_ap import STAT_NAMES, nms_ap, reference_nms_ap, suppression_mask


def _gt(anns: list[dict], n_images: int = 1, n_cats: int = 2) -> dict:
    return {
        "images": [{"id": i + 1, "width": 200, "height": 200} for i in range(n_images)],
        "categories": [{"id": c + 1, "name": f"label {c + 1}"} for c in range(n_cats)],
        "annotations": [{"id": k + 1, "iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a}
                        for k, a in enumerate(anns)],
    }


def _pred(cat: int, bbox: list[float], score: float, image: int = 1) -> dict:
    return {"image_id": image, "category_id": cat, "bbox": bbox, "score": score}


def _both(gt: dict, preds: list[dict], **kw) -> dict[str, float]:
    fast, ref = nms_ap(gt, preds, **kw), reference_nms_ap(gt, preds, **kw)
    assert fast.keys() == ref.keys()
    for k in fast:
        assert fast[k] == pytest.approx(ref[k], abs=1e-9), k
    return fast


# ---- hand-computed ---------------------------------------------------------------------------------
# (A perfect category scores 1 - 2e-16, not 1: COCOeval's precision is tp / (tp + fp + eps).)
# One 200 x 200 image; GT 1: label 1 at [0, 0, 40, 40]; GT 2: label 2 at [50, 50, 40, 40] (both medium).
HAND_GT = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
               {"image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40]}])
HAND_PREDS = [
    _pred(1, [0, 0, 40, 40], 0.9),      # GT 1 exactly, right label
    _pred(2, [0, 0, 40, 40], 0.8),      # the same box under the other label: the duplicate NMS removes
    _pred(2, [50, 50, 40, 24.8], 0.7),  # GT 2 at IoU 992 / 1600 = 0.62: a hit at thresholds .50 .55 .60
]


def test_hand_case_suppresses_the_wrong_label_duplicate():
    assert suppression_mask(HAND_GT, HAND_PREDS) == [True, False, True]
    assert suppression_mask(HAND_GT, HAND_PREDS, reference=True) == [True, False, True]
    r = _both(HAND_GT, HAND_PREDS)
    # label 1: precision 1 at every threshold -> 1.0; label 2: 1 at 3 of 10 thresholds -> 0.3.
    assert r["AP"] == pytest.approx((1.0 + 0.3) / 2, abs=1e-12)
    assert r["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert r["AP75"] == pytest.approx(0.5, abs=1e-12)
    assert r["APm"] == pytest.approx(0.65, abs=1e-12)
    assert r["APs"] == -1.0 and r["APl"] == -1.0  # no small or large ground truth: undefined
    assert r["AR1"] == pytest.approx(0.65, abs=1e-12) and r["AR100"] == pytest.approx(0.65, abs=1e-12)
    assert (r["n_predictions"], r["n_kept"]) == (3.0, 2.0)


def test_without_suppression_the_duplicate_costs_label_2_half_its_precision():
    # IoU 1.0 is never > 1.0, so nothing is suppressed: plain COCO AP. Label 2 ranks its false positive
    # (0.8) before its hit (0.7): precision 1/2 at recall 1 -> 0.5 at 3 thresholds -> 0.15.
    r = _both(HAND_GT, HAND_PREDS, iou_threshold=1.0)
    assert r["n_kept"] == 3.0
    assert r["AP"] == pytest.approx((1.0 + 0.15) / 2, abs=1e-12)
    assert r["AP50"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-12)
    assert r["AR1"] == pytest.approx(0.5, abs=1e-12)  # label 2's single best-scored box is the duplicate


def test_a_prediction_kept_for_one_ground_truth_is_never_removed_for_another():
    # GT 1 [0, 0, 40, 40], GT 2 [15, 0, 40, 40]. A (0.9) overlaps both (IoU .70, .67), B (0.95) is GT 2
    # (IoU .45 with GT 1), C (0.5) overlaps both (.78, .60). GT 1: A wins over C; GT 2: B wins over A
    # and C. A, kept for GT 1, stays; only C goes.
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
              {"image_id": 1, "category_id": 1, "bbox": [15, 0, 40, 40]}], n_cats=1)
    preds = [_pred(1, [7, 0, 40, 40], 0.9), _pred(1, [15, 0, 40, 40], 0.95), _pred(1, [5, 0, 40, 40], 0.5)]
    assert suppression_mask(gt, preds) == [True, True, False]
    assert suppression_mask(gt, preds, reference=True) == [True, True, False]
    _both(gt, preds)


# ---- the official tie rule: the last of numpy's default ascending argsort -------------------------
def test_two_equal_scores_the_later_listed_prediction_survives():
    preds = [_pred(1, [0, 0, 40, 40], 0.9), _pred(2, [0, 0, 40, 40], 0.9)]
    assert np.argsort(np.array([0.9, 0.9]))[-1] == 1  # numpy's order for two equal values
    assert suppression_mask(HAND_GT, preds) == [False, True]
    assert suppression_mask(HAND_GT, preds, reference=True) == [False, True]
    r = _both(HAND_GT, preds)
    assert r["AP"] == 0.0  # the right label's box was the one dropped; label 2's survivor misses GT 2


@pytest.mark.parametrize("scores", [
    [0.9, 0.9, 0.5, 0.5],  # AVX2 numpy (x86-simd-sort) puts index 0 last: the first-listed wins
    [0.5, 0.5, 0.9, 0.9, 0.5, 0.5],  # there: index 2
    [0.9, 0.5, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9],
    [0.7, 0.7, 0.7, 0.7],
    [0.3, 0.8, 0.8, 0.1, 0.8, 0.8, 0.8, 0.8, 0.8, 0.2, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8],
])
def test_many_equal_scores_follow_numpy_argsort(scores):
    # numpy's default sort is not stable (with SIMD sorting even for 4 values), so the winner is
    # whatever argsort puts last on this machine; both implementations must pick that one.
    preds = [_pred(1 + k % 2, [0, 0, 40 + k * 0.1, 40], s) for k, s in enumerate(scores)]
    expected = int(np.argsort(np.array(scores))[-1])
    mask = suppression_mask(HAND_GT, preds)
    assert mask == [k == expected for k in range(len(scores))]
    assert suppression_mask(HAND_GT, preds, reference=True) == mask
    _both(HAND_GT, preds)


def test_integer_scores_sort_as_the_script_sorts_them():
    # All-int scores make the script's array int64; the fast path must sort that array, not floats.
    scores = [1, 1, 5, 5, 1, 1]
    preds = [_pred(1, [0, 0, 40 + k, 40], s) for k, s in enumerate(scores)]
    expected = int(np.argsort(np.array(scores))[-1])
    assert suppression_mask(HAND_GT, preds) == [k == expected for k in range(6)]
    _both(HAND_GT, preds)


# ---- COCO details ---------------------------------------------------------------------------------
def test_only_the_100_best_scored_detections_per_image_and_label_count():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}], n_cats=1)
    far = [_pred(1, [150, 150, 10, 10], 0.9) for _ in range(100)]
    late = _both(gt, [*far, _pred(1, [0, 0, 40, 40], 0.5)])  # the hit is the 101st: never seen
    early = _both(gt, [*far[:99], _pred(1, [0, 0, 40, 40], 0.5)])  # the 100th: precision 1/100
    assert late["AP"] == 0.0 and late["AR100"] == 0.0
    assert early["AR100"] == 1.0 and early["AP"] == pytest.approx(0.01, abs=1e-12)


def test_crowd_ground_truth_is_ignored_and_absorbs_any_number_of_detections():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
              {"image_id": 1, "category_id": 1, "bbox": [100, 100, 80, 80], "iscrowd": 1}], n_cats=1)
    preds = [_pred(1, [0, 0, 40, 40], 0.5), _pred(1, [100, 100, 30, 30], 0.9), _pred(1, [140, 140, 30, 30], 0.8)]
    r = _both(gt, preds, iou_threshold=1.0)  # no suppression: look at COCO's crowd handling alone
    assert r["AP"] == pytest.approx(1.0, abs=1e-12)  # the two boxes inside the crowd region are neither hits nor false positives


def test_edge_cases_no_predictions_no_ground_truth_empty_images():
    assert _both(HAND_GT, [])["AP"] == 0.0  # ground truth and nothing found
    empty = _gt([], n_images=2)
    r = _both(empty, [_pred(1, [0, 0, 10, 10], 0.9, image=2)])
    assert all(r[k] == -1.0 for k in STAT_NAMES)  # no ground truth anywhere: undefined, as pycocotools
    r = _both(_gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}], n_images=3),
              [_pred(1, [0, 0, 40, 40], 0.9), _pred(2, [0, 0, 40, 40], 0.8, image=3)])
    assert r["AP"] == pytest.approx(1.0, abs=1e-12)  # label 2 has no ground truth: left out of the mean, its box costs nothing


def test_ground_truth_id_zero_is_pycocotools_false_positive():
    # pycocotools records the matched ground truth's id and tests it for non-zero.
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}], n_cats=1)
    gt["annotations"][0]["id"] = 0
    assert _both(gt, [_pred(1, [0, 0, 40, 40], 0.9)])["AP"] == 0.0


def test_missing_area_and_iscrowd_are_filled_in():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}], n_cats=1)
    for a in gt["annotations"]:
        del a["area"], a["iscrowd"]
    assert _both(gt, [_pred(1, [0, 0, 40, 40], 0.9)])["APm"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("bad, match", [
    ({"image_id": 9}, "image_id 9 is not in"),
    ({"score": float("nan")}, "score must be a finite number"),
    ({"score": "high"}, "score must be a finite number"),
    ({"bbox": [0, 0, 10]}, "bbox must be 4 finite numbers"),
])
def test_bad_predictions_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        nms_ap(HAND_GT, [HAND_PREDS[0], {**HAND_PREDS[1], **bad}])


def test_duplicate_annotation_ids_are_refused():
    gt = _gt([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}] * 2, n_cats=1)
    gt["annotations"][1]["id"] = 1
    with pytest.raises(ValueError, match="unique"):
        nms_ap(gt, [])


def test_metrics_reexports_nms_ap():
    assert metrics.nms_ap is nms_ap


# ---- randomized: fast == reference ----------------------------------------------------------------
def _random_case(rng: np.random.Generator) -> tuple[dict, list[dict]]:
    n_img, n_cat = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    score_set = [0.3, 0.5, 0.9, 1.0] if rng.random() < 0.7 else list(np.round(rng.random(30), 2))
    anns, preds = [], []
    for img in range(1, n_img + 1):
        boxes = []
        for _ in range(int(rng.integers(0, 6))):
            w, h = (int(v) for v in (rng.integers(1, 12, 2) if rng.random() < 0.3 else rng.integers(8, 120, 2)))
            box = [int(rng.integers(0, 150)), int(rng.integers(0, 150)), w, h]
            anns.append({"image_id": img, "category_id": int(rng.integers(1, n_cat + 1)), "bbox": box,
                         "iscrowd": int(rng.random() < 0.1)})
            boxes.append(box)
        for _ in range(int(rng.integers(0, 40 if rng.random() < 0.85 else 260))):  # > 100 per label too
            if boxes and rng.random() < 0.75:  # heavy overlap: jittered or exact copies of a true box
                x, y, w, h = boxes[int(rng.integers(len(boxes)))]
                d = rng.integers(-3, 4, 4) if rng.random() < 0.7 else np.zeros(4, int)
                box = [float(x + d[0]), float(y + d[1]), float(max(1, w + d[2])), float(max(1, h + d[3]))]
            else:
                box = [float(v) for v in (*rng.integers(0, 150, 2), *rng.integers(1, 120, 2))]
            preds.append(_pred(int(rng.integers(1, n_cat + 2)), box, float(rng.choice(score_set)), image=img))
    gt = _gt(anns, n_images=n_img, n_cats=n_cat)
    if rng.random() < 0.2:
        gt["annotations"][0:1] = [{**a, "id": 0} for a in gt["annotations"][0:1]]
    return gt, preds


@pytest.mark.parametrize("seed", range(8))
def test_fast_equals_reference_on_random_inputs_with_ties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        gt, preds = _random_case(rng)
        assert suppression_mask(gt, preds) == suppression_mask(gt, preds, reference=True)
        fast, ref = nms_ap(gt, preds), reference_nms_ap(gt, preds)
        assert max(abs(fast[k] - ref[k]) for k in ref) <= 1e-9, (seed, fast, ref)
