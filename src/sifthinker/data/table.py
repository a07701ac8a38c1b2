"""Flatten SIF records (docs/architecture.md, "Record schema") into a one-row-per-record DataFrame.

Everything that needs Python to compute (parsing traces, comparing box sets, looking at files) is done
here and lands in a *derived column*; :mod:`sifthinker.data.checks` then states the expectations over
those columns with Great Expectations. Keeping the derivation here means the table can be inspected on
its own (``records_table(...).query("not trace_valid")``) and the GX suite stays declarative.

Conventions: a derived value that cannot be computed because an input is already broken is ``None``
(GX column-map expectations skip nulls), so one defect fails one expectation instead of a cascade;
e.g. an invalid trace fails ``trace_valid`` but leaves ``last_area_matches_gt`` null.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from sifthinker.method import trace as sif_trace
from sifthinker.method.geometry import iou_h

__all__ = ["JSON_FIELDS", "REQUIRED_FIELDS", "STRING_FIELDS", "records_table"]

STRING_FIELDS = (
    "id", "dataset", "source", "split", "category", "image", "depth_image", "depth_map",
    "problem", "response", "box_frame",
)
# Structured fields are stored as JSON text in the table: GX counts unexpected values, which must be hashable.
JSON_FIELDS = ("messages", "images", "normalized_solution_round")
REQUIRED_FIELDS = (
    "id", "dataset", "source", "split", "category", "image", "depth_image", "depth_map", "problem",
    "response", "messages", "images", "box_frame", "normalized_solution_round",
)
FILE_FIELDS = ("image", "depth_image", "depth_map")
OPTIONAL_FIELDS = ("shard", "source_image")  # build provenance: which shard, which source file
DECIMALS = 3


def _as_text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _gt_boxes(rec: dict) -> tuple[list[tuple[float, ...]] | None, int | None]:
    """GT boxes when well formed (a non-empty list of 4-number lists), and the raw count when a list."""
    nsr = rec.get("normalized_solution_round")
    raw = nsr.get("bbox_3d") if isinstance(nsr, dict) else None
    if not isinstance(raw, list):
        return None, None
    ok = bool(raw) and all(isinstance(b, list | tuple) and len(b) == 4 and all(map(_is_num, b)) for b in raw)
    return ([tuple(float(v) for v in b) for b in raw] if ok else None), len(raw)


def _assistant_text(rec: dict) -> str | None:
    """Content of the last assistant message (string, or the text parts of a parts list joined)."""
    msgs = rec.get("messages")
    if not isinstance(msgs, list):
        return None
    for m in reversed(msgs):
        if isinstance(m, dict) and m.get("role") == "assistant":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
            return c if isinstance(c, str) else None
    return None


def _exists(root: Path, rel: Any) -> bool:
    return isinstance(rel, str) and bool(rel) and (root / rel).is_file()


def _box_set(boxes: Any) -> frozenset[tuple[float, ...]]:
    return frozenset(tuple(round(v, DECIMALS) for v in b) for b in boxes)


def _fmt_boxes(boxes: Any) -> str:
    return json.dumps(sorted(_box_set(boxes)))


def _row(rec: Any, root: Path) -> dict[str, Any]:
    rec = rec if isinstance(rec, dict) else {}
    row: dict[str, Any] = {f: _as_text(rec.get(f)) for f in STRING_FIELDS + OPTIONAL_FIELDS}
    row.update({f: (None if rec.get(f) is None else json.dumps(rec.get(f), default=str)) for f in JSON_FIELDS})

    gt, n_gt = _gt_boxes(rec)
    row["n_gt_boxes"] = n_gt
    row["gt_boxes_wellformed"] = gt is not None
    row["gt_boxes"] = _fmt_boxes(gt) if gt else None
    coords = [v for b in gt or () for v in b]
    row["gt_min_coord"] = min(coords) if coords else math.nan
    row["gt_max_coord"] = max(coords) if coords else math.nan
    row["gt_x2_gt_x1"] = all(b[2] > b[0] for b in gt) if gt else None
    row["gt_y2_gt_y1"] = all(b[3] > b[1] for b in gt) if gt else None
    row["gt_rounded"] = all(round(v, DECIMALS) == v for v in coords) if gt else None

    text = _assistant_text(rec)
    row["assistant_trace"] = text
    parsed = None
    if text is None:
        problems = ["no assistant message with string content"]
    else:
        try:
            parsed, problems = sif_trace.parse(text), []
        except sif_trace.TraceFormatError:
            problems = sif_trace.validate(text) or ["invalid trace"]
    row["trace_valid"] = parsed is not None
    row["trace_problems"] = "; ".join(problems)
    # Depths are read leniently so that an out-of-range depth is reported as such even though it also
    # makes the strict trace invalid.
    depths = [b.depth for area in sif_trace.extract_areas(text or "") for b in area]
    row["trace_min_depth"] = min(depths) if depths else math.nan
    row["trace_max_depth"] = max(depths) if depths else math.nan
    if parsed is not None and parsed.steps:
        first = parsed.steps[0].boxes
        row["first_area"] = _fmt_boxes(b.xyxy() for b in first)
        row["first_area_is_full_image"] = len(first) == 1 and first[0].is_full_image()
        last = [b.xyxy() for b in parsed.last_boxes]
        row["last_area"] = _fmt_boxes(last)
        row["last_area_matches_gt"] = None if gt is None else _box_set(last) == _box_set(gt)
        row["last_area_iou"] = math.nan if gt is None else iou_h(last, gt)
    else:
        row["first_area"] = row["first_area_is_full_image"] = None
        row["last_area"] = row["last_area_matches_gt"] = None
        row["last_area_iou"] = math.nan
    resp = rec.get("response")
    row["response_is_count"] = isinstance(resp, str | int) and str(resp).strip().isdigit()
    # An item seen twice (the same source image and question), e.g. in two shards of one build.
    src_img = rec.get("source_image")
    row["dup_key"] = f"{rec.get('source')}|{src_img}|{rec.get('problem')}" if isinstance(src_img, str) else None

    for f in FILE_FIELDS:
        row[f"{f}_exists"] = _exists(root, rec.get(f))
    imgs = rec.get("images")
    row["images_exist"] = isinstance(imgs, list) and bool(imgs) and all(_exists(root, p) for p in imgs)
    paths = [rec.get(f) for f in FILE_FIELDS] + (imgs if isinstance(imgs, list) else [])
    row["paths_relative"] = all(not (isinstance(p, str) and os.path.isabs(p)) for p in paths)
    return row


def records_table(records: list[dict], root: Path | str) -> pd.DataFrame:
    """One row per record: the record's fields (structured ones as JSON text) plus derived columns.

    Derived columns: ``n_gt_boxes``, ``gt_boxes_wellformed``, ``gt_boxes`` (rounded, sorted JSON),
    ``gt_min_coord``/``gt_max_coord``, ``gt_x2_gt_x1``/``gt_y2_gt_y1``, ``gt_rounded`` (<= 3 decimals),
    ``assistant_trace``, ``trace_valid``, ``trace_problems``, ``trace_min_depth``/``trace_max_depth``
    (over every box of every area, read leniently), ``first_area``, ``first_area_is_full_image``, ``last_area``,
    ``last_area_matches_gt`` (last area vs GT as sets of boxes rounded to 3 decimals),
    ``last_area_iou`` (IoU_h of the last area and the GT), ``response_is_count``, ``dup_key`` (source,
    source image and question of records that name their source image), ``shard``, ``source_image``,
    ``image_exists``/``depth_image_exists``/``depth_map_exists``/``images_exist`` (relative to
    ``root``), ``paths_relative``, ``category_count``/``category_share`` and ``category_balance``
    (within the record's source: share x number of the source's categories; 1.0 is an even split).
    """
    root = Path(root)
    df = pd.DataFrame([_row(r, root) for r in records], columns=list(_row({}, root)))
    # Category shares within each source: categories are balanced by design in a source, not across sources.
    counts = Counter((s, c) for s, c in zip(df["source"], df["category"], strict=True) if c is not None)
    totals = Counter(s for s, _ in counts.elements())
    kinds = Counter(s for s, _ in counts)
    df["category_count"] = [counts[(s, c)] if c is not None else math.nan
                            for s, c in zip(df["source"], df["category"], strict=True)]
    df["category_share"] = [n / totals[s] if totals[s] else math.nan
                            for s, n in zip(df["source"], df["category_count"], strict=True)]
    df["category_balance"] = [sh * kinds[s] for s, sh in zip(df["source"], df["category_share"], strict=True)]
    # Nullable dtypes: object columns with None keep GX's null handling exact.
    for col in ("gt_min_coord", "gt_max_coord", "trace_min_depth", "trace_max_depth", "last_area_iou",
                "category_count", "category_share", "category_balance"):
        df[col] = df[col].astype(float)
    return df
