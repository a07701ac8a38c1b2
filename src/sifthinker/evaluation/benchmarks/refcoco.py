"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding, in Visual-CoT's evaluation layout.

Files: ``root`` holds any of the eight JSONL files Visual-CoT publishes in ``llava/eval/REC/`` (names in
:data:`SPLITS`); each line is ``{"img_path", "expression", "bbox": [x1, y1, x2, y2] pixels, "height",
"width", "image_id", "sent_id", "split", "dataset_name"}``. Every file found is read, in the order of
:data:`SPLITS`; ``limit`` keeps the first N items of that sequence. An item's ``source`` and
``category`` are its split (``refcoco/val``, ``refcoco+/testA``, ``refcocog/test``, ...), its id
``<split>/<sent_id>``.

Images: ``img_path`` is a COCO train2014 file name. Like the original (``--image-folder
playground/data/coco/train2014``, keeping only the name's last component) the image is
``root/train2014/<name>``; a file at ``root/<img_path>`` is used when that one is absent. Item paths
are relative to ``root``. A missing image fails the load, naming the paths tried.

Prompt: ``Please provide the bounding box coordinate of the region this sentence describes:
{expression}.`` (the SIF instruction is added by :mod:`sifthinker.method.prompts`).

Scoring: IoU of one predicted box with the item's pixel box; Acc@0.5 counts IoU > 0.5 (strictly, as the
original ``calculation.py`` does). Metrics: ``overall`` (Acc@0.5 over all items), ``category/<split>``,
``mean_iou`` (unreadable predictions count 0), ``n``, ``format_failures``, ``skipped`` (always 0).
The two modes read and place the box differently:

* ``strict``: the last ``<area>`` as written: the text from the last ``<area>`` tag to the first
  ``</area>`` after it, read by :func:`sifthinker.method.trace.extract_areas` (a JSON list of boxes or a lone
  box, each with a 4-number ``bbox_2d`` and a numeric ``depth``; ranges not checked). No closing tag,
  broken JSON or a malformed box is a format failure (IoU 0). The first box is the prediction, per-axis
  normalised: pixels = (x * W, y * H) with the item's own ``width``/``height`` (spec E6 fixed).
* ``original``: SIFThinker's ``evaluation/viscot/model_refcoco_loader.py`` + Visual-CoT's
  ``calculation.py``. The last match of ``<area>(.*?)</area>``; its JSON's ``bbox_2d`` values (depth
  not needed); exactly one box, else wrong (with no box the script's ``[-1][0]`` fails; with several its
  merging code indexes areas as boxes and fails in practice); the box's first four numbers are read as
  normalised on the square canvas of side ``max(W, H)`` on which the image is centred (E6), i.e.
  :data:`~sifthinker.method.geometry.Frame.VISCOT_SQUARE` with ``pad="center"``. ``calculation.py`` instead
  shifts the ground truth onto that canvas; IoU does not change under a shared shift, so the numbers
  agree. An inverted predicted box scores IoU 0 here (torchvision's ``box_iou`` can give a spurious value).

So the modes differ (a) on every non-square image, through the frame, and (b) in what counts as a
readable box: several boxes (strict takes the first), a box without depth (strict: failure), an unclosed
last ``<area>`` after a closed one (original reads the earlier one).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring
from sifthinker.evaluation.benchmarks.parsing import Unit, require_responses, summarize
from sifthinker.method import trace as sif_trace
from sifthinker.method.geometry import Frame, box_iou, convert, from_norm

__all__ = ["BENCHMARK", "PROMPT", "SPLITS", "RefCOCO", "predicted_box"]

NAME = "refcoco"
PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {expression}."
# (split, published file name), in the order Visual-CoT's tools/refcoco_get_result.py reports them.
SPLITS: tuple[tuple[str, str], ...] = (
    ("refcoco/val", "REC_refcoco_unc_val.jsonl"),
    ("refcoco/testA", "REC_refcoco_unc_testA.jsonl"),
    ("refcoco/testB", "REC_refcoco_unc_testB.jsonl"),
    ("refcoco+/val", "REC_refcoco+_unc_val.jsonl"),
    ("refcoco+/testA", "REC_refcoco+_unc_testA.jsonl"),
    ("refcoco+/testB", "REC_refcoco+_unc_testB.jsonl"),
    ("refcocog/val", "REC_refcocog_umd_val.jsonl"),
    ("refcocog/test", "REC_refcocog_umd_test.jsonl"),
)
IMAGE_DIR = "train2014"
IOU_THRESHOLD = 0.5
_ORIGINAL_AREA_RE = re.compile(r"<area>(.*?)</area>", re.DOTALL)  # the original script's pattern

BoxT = tuple[float, float, float, float]


def _image_path(root: Path, img_path: str) -> str:
    """Path of the item's image relative to ``root`` (see the module docstring)."""
    name = img_path.replace("\\", "/").split("/")[-1]
    candidates = [f"{IMAGE_DIR}/{name}", img_path]
    for rel in candidates:
        if (root / rel).is_file():
            return rel
    raise FileNotFoundError(f"image {img_path!r} not found under {root} (looked for {', '.join(candidates)})")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _item(line: Mapping[str, Any], split: str, lineno: int, root: Path) -> Item:
    bbox, w, h = line.get("bbox"), line.get("width"), line.get("height")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise ValueError(f"bbox must be 4 numbers, got {bbox!r}")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise ValueError(f"width and height must be positive integers, got {w!r} x {h!r}")
    expression = line.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("expression is missing or empty")
    if not isinstance(line.get("img_path"), str):
        raise ValueError("img_path is missing")
    sid = line.get("sent_id", lineno)  # sent_id is unique within a published file; the line number otherwise
    return Item(
        id=f"{split}/{sid}", benchmark=NAME, category=split, question=expression,
        images=[_image_path(root, line["img_path"])], answer=None,
        boxes=[[float(v) for v in bbox]], width=w, height=h, source=split,
    )


def _read_split(path: Path, split: str, root: Path, room: int | None) -> list[Item]:
    items: list[Item] = []
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            if room is not None and len(items) >= room:
                break
            if not raw.strip():
                continue
            try:
                items.append(_item(json.loads(raw), split, lineno, root))
            except (ValueError, FileNotFoundError) as e:  # json errors are ValueErrors too
                raise type(e)(f"{path}:{lineno}: {e}") from e
    return items


# ---- reading the prediction -----------------------------------------------------------------------
def _strict_box(response: str) -> tuple[BoxT | None, str]:
    """The first box of the last ``<area>`` as written, per-axis normalised; (None, why) otherwise."""
    start = response.rfind("<area>")
    if start < 0:
        return None, "no <area>"
    end = response.find("</area>", start)
    if end < 0:
        return None, "the last <area> is not closed"
    areas = sif_trace.extract_areas(response[start : end + len("</area>")])
    if not areas:
        return None, "the last <area> does not parse"
    return areas[0][0].xyxy(), ""


def _original_box(response: str) -> tuple[BoxT | None, str]:
    """The box the original script reads, normalised on the square canvas; (None, why) otherwise."""
    found = _ORIGINAL_AREA_RE.findall(response)
    if not found:
        return None, "no <area>...</area>"
    try:
        data = json.loads(found[-1])
    except (ValueError, RecursionError):
        return None, "the last <area> is not JSON"
    entries = data if isinstance(data, list) else [data]
    boxes = [e["bbox_2d"] for e in entries if isinstance(e, dict) and "bbox_2d" in e]
    if len(boxes) != 1:
        return None, f"the last <area> has {len(boxes)} boxes (the original reads exactly one)"
    box = boxes[0]
    # calculation.py re-parses str(box) and takes its first four numbers.
    if not (isinstance(box, list) and len(box) >= 4 and all(_number(v) for v in box[:4])):
        return None, "bbox_2d is not a list of at least 4 numbers"
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3])), ""


def predicted_box(response: str, width: int, height: int, scoring: Scoring | str) -> tuple[BoxT | None, str]:
    """The predicted box in pixels of the ``width x height`` image under ``scoring``; (None, why) when the
    response has no box that mode can read (a format failure)."""
    if Scoring(scoring) is Scoring.STRICT:
        box, why = _strict_box(response)
        return (None, why) if box is None else (from_norm(box, Frame.PIXEL, width, height), "")
    box, why = _original_box(response)
    if box is None:
        return None, why
    return convert(box, Frame.VISCOT_SQUARE, Frame.PIXEL, width, height, pad="center"), ""


def _fmt(box: BoxT) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


class RefCOCO:
    """The ``refcoco`` benchmark (all eight splits of RefCOCO, RefCOCO+ and RefCOCOg found under root)."""

    name = NAME

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root)
        found = [(split, root / fname) for split, fname in SPLITS if (root / fname).is_file()]
        if not found:
            raise FileNotFoundError(f"no RefCOCO files in {root}: expected any of "
                                    f"{', '.join(f for _, f in SPLITS)} (Visual-CoT's llava/eval/REC/)")
        items: list[Item] = []
        for split, path in found:
            room = None if limit is None else limit - len(items)
            if room is not None and room <= 0:
                break
            items += _read_split(path, split, root, room)
        dups = [k for k, c in Counter(i.id for i in items).items() if c > 1]
        if dups:  # ids key the responses: two items with one id would share one response
            raise ValueError(f"duplicate item id {dups[0]!r} in {root}")
        return items

    def prompt(self, item: Item) -> str:
        return PROMPT.format(expression=item.question)

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        require_responses(items, responses)  # a dropped generation must not be scored as a model's failure
        results: list[ItemResult] = []
        for it in items:
            if not it.boxes or it.width is None or it.height is None:
                raise ValueError(f"item {it.id!r} has no ground-truth box or image size")
            gt = tuple(float(v) for v in it.boxes[0])
            resp = responses[it.id]
            pred, why = predicted_box(resp if isinstance(resp, str) else "", it.width, it.height, scoring)
            iou = 0.0 if pred is None else box_iou(pred, gt)  # type: ignore[arg-type]
            results.append(ItemResult(
                id=it.id, category=it.category, correct=iou > IOU_THRESHOLD, format_failure=pred is None,
                parsed=None if pred is None else _fmt(pred), iou=iou, note=why,
            ))
        return _summarise(results, scoring)


def _summarise(results: list[ItemResult], scoring: Scoring) -> BenchmarkScore:
    n = len(results)
    units = [Unit(r.correct, ("overall", f"category/{r.category}")) for r in results]
    notes = []
    if scoring is Scoring.ORIGINAL:
        notes.append("original scoring (E6): boxes read as normalised on the square-padded canvas; "
                     "a last <area> with several boxes counts as wrong")
    # mean_iou is a mean, not a proportion: no Wilson interval.
    composite = {"mean_iou": sum(r.iou or 0.0 for r in results) / n if n else 0.0}
    return summarize(NAME, scoring, results, units, composite=composite, notes=notes)


BENCHMARK = RefCOCO()
