"""OVDEval (om-ai-lab/OVDEval): open-vocabulary detection with hard negatives, scored by NMS-AP.

Files: one COCO-format annotation file per subset, as the dataset (Hugging Face ``omlab/OVDEval``) and
the repository's ``Evaluation.md`` lay them out: ``annotations/<subset>.json`` with the images under
``images/<subset>/`` (also accepted: ``<subset>.json`` and ``<subset>/`` directly under ``root``, the
dataset repository's layout once its ``<subset>.tar.gz`` is unpacked). Subsets, in this order:
:data:`SUBSETS`; the general one is also found as ``coco.json``, the name OVDEval's ``eval_glip.py``
uses. Every file found is read; none found is an error. Each image record has ``id``, ``file_name``,
``width``, ``height``, ``text`` (its positive labels) and ``neg_text`` (hard negatives); annotations have
``bbox`` (x, y, w, h pixels), ``category_id``, ``area``, ``iscrowd``; categories map ``id`` to ``name``
(the label string; when two share a name the last wins, as ``eval_glip.py``'s ``category_map``).

Items: one per (image, label) over ``text`` then ``neg_text`` (a label in both counts as positive; an
image without either list, such as plain COCO, is asked every category, as ``eval_glip.py`` does for its
``coco`` set). A category annotated in an image but missing from its ``text`` is asked too, so that the
ground truth rebuilt from the items equals the file's. Id ``<subset>/<image id>/<category id>``;
``category`` and ``source``: the subset; ``boxes``: the label's ground truth in that image as pixel
x1, y1, x2, y2 (``[]`` for a hard negative); ``extra``: ``subset``, ``image_id``, ``category_id``,
``label``, ``negative`` and ``annotations`` (the file's ``bbox``/``area``/``iscrowd``, so scoring uses
exactly the published numbers). ``limit``: whole images are taken in turn from each subset until there
are ``limit`` items (the last image may be cut), so a short run still covers every subset.

Prompt: ``Locate every {label} in the image. Output the bounding boxes of all of them in the last
<area>.`` (the SIF instruction is added by :mod:`sifthinker.method.prompts`).

Scoring: the response's boxes (per-axis normalised) are clipped to the image and converted to pixel
x, y, w, h with the image's width and height; a box that is inverted or empty after clipping becomes a
zero-size box at its first corner, a detection that can never match (so a false positive, never an
ignored one). The k-th box of a response (k = 0, 1, ...) gets score ``1 - k/1000``: the model gives no
confidence, only an order; at most the first 100 boxes count (COCO's maxDets). Detections are listed
image by image, labels in question order (``text`` before ``neg_text``), so with equal scores the
official tie rule of :func:`sifthinker.evaluation.nms_ap.nms_ap` (the last of numpy's argsort: for two
or three tied boxes, the later-listed one) keeps a box that a response gives for both a true label
and its hard negative under the negative: the duplicate costs the true label its hit, which is what
NMS-AP is meant to punish. Per subset the COCO ground truth is rebuilt from the items (annotation ids
renumbered from 1, since pycocotools counts a match to id 0 as a miss) and NMS-AP computed.

Metrics (fractions): ``<subset>/AP``, ``<subset>/AP50``, ``category/<subset>`` (= that AP); ``AP``,
``AP50``: the means over subsets (a subset without any ground-truth box has no AP: left out, with a
note); ``overall`` = ``AP``; ``item_accuracy`` (with a Wilson interval): items whose boxes are exactly
right at IoU >= 0.5 (every ground-truth box matched one to one, nothing extra; a hard negative: no box);
``n``, ``format_failures``, ``skipped`` (0). The two modes read the boxes differently:

* ``strict``: the last ``<area>`` as written: the text from the last ``<area>`` tag to the first
  ``</area>`` after it, read by :func:`sifthinker.method.trace.extract_areas`; ``[]`` there means "none" (no
  detections, not a failure). No ``<area>``, no closing tag or content that does not parse is a format
  failure, with no detections.
* ``original``: the last parseable ``<area>`` anywhere (:func:`sifthinker.method.trace.extract_areas`, which
  skips broken and empty ones); a failure only when none parses.

So they differ exactly on a response whose last area is broken (or ``[]``) after a parseable one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring, wilson
from sifthinker.evaluation.benchmarks.parsing import require_responses
from sifthinker.evaluation.nms_ap import nms_ap
from sifthinker.method import trace as sif_trace
from sifthinker.method.geometry import Frame, box_iou, clip_box, from_norm

__all__ = ["BENCHMARK", "PROMPT", "SUBSETS", "OVDEval", "read_boxes"]

NAME = "ovdeval"
SUBSETS = ("celebrity", "logo", "landmark", "color", "material", "position", "relationship", "negation",
           "general")
_FILE_NAMES = {"general": ("general", "coco")}  # eval_glip.py calls the COCO subset "coco"
PROMPT = "Locate every {label} in the image. Output the bounding boxes of all of them in the last <area>."
MAX_BOXES = 100  # COCO's maxDets: later boxes of a response could never count
IOU_HIT = 0.5

BoxT = tuple[float, float, float, float]


# ---- loading --------------------------------------------------------------------------------------
def _find(root: Path, subset: str) -> tuple[Path, list[Path]] | None:
    """The subset's annotation file and the folders its images may be in, or None."""
    for name in _FILE_NAMES.get(subset, (subset,)):
        for ann, dirs in ((root / "annotations" / f"{name}.json", [root / "images" / name, root / name]),
                          (root / f"{name}.json", [root / name, root / "images" / name])):
            if ann.is_file():
                return ann, dirs
    return None


def _labels(image: Mapping[str, Any], annotated: list[int], names: Mapping[int, str]) -> list[tuple[str, bool]]:
    """(label, negative) in question order: ``text`` (plus annotated labels it misses), then ``neg_text``."""
    if image.get("text") is None and image.get("neg_text") is None:
        return [(n, False) for n in dict.fromkeys(names.values())]
    pos = list(dict.fromkeys([*(image.get("text") or []), *(names[c] for c in annotated if c in names)]))
    neg = [t for t in dict.fromkeys(image.get("neg_text") or []) if t not in pos]
    return [(t, False) for t in pos] + [(t, True) for t in neg]


def _image_items(subset: str, image: Mapping[str, Any], anns: list[dict], by_name: Mapping[str, int],
                 names: Mapping[int, str], rel_image: str) -> list[Item]:
    items = []
    w, h = int(image["width"]), int(image["height"])
    for label, negative in _labels(image, [a["category_id"] for a in anns], names):
        if label not in by_name:
            raise ValueError(f"image {image['id']!r}: label {label!r} is not a category name")
        cid = by_name[label]
        mine = [{"bbox": [float(v) for v in a["bbox"]], "area": float(a.get("area", a["bbox"][2] * a["bbox"][3])),
                 "iscrowd": int(a.get("iscrowd", 0))} for a in anns if a["category_id"] == cid]
        items.append(Item(
            id=f"{subset}/{image['id']}/{cid}", benchmark=NAME, category=subset, question=label,
            images=[rel_image], boxes=[[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in mine)],
            width=w, height=h, source=subset,
            extra={"subset": subset, "image_id": image["id"], "category_id": cid, "label": label,
                   "negative": negative, "annotations": mine},
        ))
    return items


def _read_subset(root: Path, subset: str, ann_path: Path, dirs: list[Path]) -> list[list[Item]]:
    """The subset's items, grouped by image, in file order."""
    data = json.loads(ann_path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_name = {n: c for c, n in names.items()}  # a repeated name: the last category wins
    per_image: dict[Any, list[dict]] = defaultdict(list)
    for a in data["annotations"]:
        per_image[a["image_id"]].append(a)
    out = []
    for image in data["images"]:
        folder = next((d for d in dirs if (d / image["file_name"]).is_file()), None)
        if folder is None:
            raise FileNotFoundError(f"{ann_path}: image {image['file_name']!r} not found in "
                                    f"{' or '.join(str(d) for d in dirs)}")
        rel = (folder / image["file_name"]).relative_to(root).as_posix()
        try:
            out.append(_image_items(subset, image, per_image.get(image["id"], []), by_name, names, rel))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{ann_path}: {e}") from e
    return out


# ---- reading a response ---------------------------------------------------------------------------
def read_boxes(response: str, scoring: Scoring | str) -> tuple[list[BoxT] | None, str]:
    """The response's boxes (per-axis normalised x1, y1, x2, y2) under ``scoring``; (None, why) when the
    mode finds no readable area (a format failure). See the module docstring."""
    if not isinstance(response, str):
        return None, "no response text"
    if Scoring(scoring) is Scoring.ORIGINAL:
        areas = sif_trace.extract_areas(response)
        return ([b.xyxy() for b in areas[-1]], "") if areas else (None, "no parseable <area>")
    start = response.rfind("<area>")
    if start < 0:
        return None, "no <area>"
    end = response.find("</area>", start)
    if end < 0:
        return None, "the last <area> is not closed"
    try:
        if json.loads(response[start + len("<area>") : end]) == []:
            return [], ""
    except (ValueError, RecursionError):
        pass
    areas = sif_trace.extract_areas(response[start : end + len("</area>")])
    return ([b.xyxy() for b in areas[0]], "") if areas else (None, "the last <area> does not parse")


def _pixel_xywh(box: BoxT, width: int, height: int) -> list[float]:
    x1, y1, x2, y2 = from_norm(clip_box(box, 1.0, 1.0), Frame.PIXEL, width, height)
    if x2 <= x1 or y2 <= y1:
        return [x1, y1, 0.0, 0.0]  # never matches, still a detection
    return [x1, y1, x2 - x1, y2 - y1]


def _exact(pred: list[list[float]], gt: list[list[float]]) -> bool:
    """Every ground-truth box matched one to one at IoU >= 0.5 and no predicted box left over."""
    if len(pred) != len(gt):
        return False
    if not gt:
        return True
    hits = np.array([[box_iou(p, g) >= IOU_HIT for g in gt] for p in pred], float)
    rows, cols = linear_sum_assignment(-hits)  # maximum number of one-to-one hits
    return int(hits[rows, cols].sum()) == len(gt)


# ---- the benchmark --------------------------------------------------------------------------------
class OVDEval:
    """The ``ovdeval`` benchmark (every OVDEval subset found under root)."""

    name = NAME

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root)
        found = [(s, *f) for s in SUBSETS if (f := _find(root, s))]
        if not found:
            raise FileNotFoundError(f"no OVDEval annotation files in {root}: expected annotations/<subset>.json "
                                    f"(or <subset>.json) for any of {', '.join(SUBSETS)}")
        groups = [_read_subset(root, s, ann, dirs) for s, ann, dirs in found]
        if limit is None:
            return [it for g in groups for image in g for it in image]
        taken: list[tuple[int, int]] = []  # (subset, image) in turn from each subset
        count, depth = 0, 0
        while count < limit and any(depth < len(g) for g in groups):
            for si, g in enumerate(groups):
                if depth < len(g) and count < limit:
                    taken.append((si, depth))
                    count += len(g[depth])
            depth += 1
        return [it for si, d in sorted(taken) for it in groups[si][d]][:limit]

    def prompt(self, item: Item) -> str:
        return PROMPT.format(label=item.question)

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        require_responses(items, responses)  # a dropped generation must not be scored as a model's failure
        results: list[ItemResult] = []
        subsets: dict[str, dict[str, Any]] = {}
        for it in items:
            ex = it.extra
            if it.width is None or it.height is None or "image_id" not in ex or "category_id" not in ex:
                raise ValueError(f"item {it.id!r} lacks its image size or OVDEval ids")
            sub = subsets.setdefault(ex.get("subset", it.category), {"images": {}, "categories": {},
                                                                      "annotations": [], "predictions": []})
            sub["images"][ex["image_id"]] = {"id": ex["image_id"], "width": it.width, "height": it.height}
            sub["categories"][ex["category_id"]] = {"id": ex["category_id"], "name": ex.get("label", it.question)}
            gt = ex.get("annotations")
            if gt is None:  # an item written without them: its pixel corners
                gt = [{"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                      for x1, y1, x2, y2 in it.boxes or []]
            for a in gt:
                sub["annotations"].append({**a, "id": len(sub["annotations"]) + 1, "image_id": ex["image_id"],
                                           "category_id": ex["category_id"]})
            boxes, why = read_boxes(responses[it.id], scoring)
            pixels = [_pixel_xywh(b, it.width, it.height) for b in (boxes or [])[:MAX_BOXES]]
            sub["predictions"] += [{"image_id": ex["image_id"], "category_id": ex["category_id"], "bbox": b,
                                    "score": 1.0 - k / 1000} for k, b in enumerate(pixels)]
            corners = [[x, y, x + w, y + h] for x, y, w, h in pixels]
            gt_corners = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in gt)]
            results.append(ItemResult(
                id=it.id, category=it.category, correct=boxes is not None and _exact(corners, gt_corners),
                format_failure=boxes is None, parsed=None if boxes is None else json.dumps(
                    [[round(v, 1) for v in c] for c in corners]), note=why,
            ))
        return _summarise(subsets, results, scoring)


def _summarise(subsets: dict[str, dict[str, Any]], results: list[ItemResult], scoring: Scoring) -> BenchmarkScore:
    metrics: dict[str, float] = {}
    notes: list[str] = []
    aps, ap50s = [], []
    for name in sorted(subsets, key=lambda s: (SUBSETS.index(s) if s in SUBSETS else len(SUBSETS), s)):
        sub = subsets[name]
        gt = {"images": list(sub["images"].values()), "categories": list(sub["categories"].values()),
              "annotations": sub["annotations"]}
        r = nms_ap(gt, sub["predictions"])
        if r["AP"] < 0:  # -1: no ground-truth box at all, so no AP
            notes.append(f"{name}: no ground-truth box among its items, no AP (left out of the means)")
            continue
        metrics[f"{name}/AP"], metrics[f"{name}/AP50"] = r["AP"], r["AP50"]
        metrics[f"category/{name}"] = r["AP"]
        aps.append(r["AP"])
        ap50s.append(r["AP50"])
    if not aps:
        notes.append("no subset has ground truth: AP, AP50 and overall set to 0")
    ap = float(np.mean(aps)) if aps else 0.0
    correct = sum(bool(r.correct) for r in results)
    head = {"overall": ap, "n": float(len(results)),
            "format_failures": float(sum(r.format_failure for r in results)), "skipped": 0.0,
            "AP": ap, "AP50": float(np.mean(ap50s)) if ap50s else 0.0,
            "item_accuracy": correct / len(results) if results else 0.0}
    if scoring is Scoring.ORIGINAL:
        notes.append("original scoring: boxes from the last parseable <area> (a broken last area falls back)")
    return BenchmarkScore(benchmark=NAME, scoring=scoring, metrics={**head, **dict(sorted(metrics.items()))},
                          items=results, intervals={"item_accuracy": wilson(correct, len(results))}, notes=notes)


BENCHMARK = OVDEval()
