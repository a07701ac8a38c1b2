"""What the rewards read: completion texts and ground-truth columns, parsed strictly.

A completion is read leniently (the model's text may be anything). Ground truth is read strictly:
a missing column or an unusable row raises ``ValueError`` naming the column and row, because a reward
silently stuck at 0 trains on noise (method spec, section 6). GT boxes come from ``gt_boxes`` (ours)
or the released SIF-50K's ``normalized_solution_round`` (``{"bbox_3d": [...]}`` or its JSON text).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sifthinker.method.trace import Box

log = logging.getLogger(__name__)

BoxT = tuple[float, float, float, float]
# Where r_box finds its GT boxes: ours first, then the released SIF-50K column (spec 2).
BOX_COLUMNS = ("gt_boxes", "normalized_solution_round")


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, str | dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""  # None or anything unexpected


def completion_text(completion: Any) -> str:
    """The text of a plain or conversational completion ("" when there is none)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence):
        msgs = [m for m in completion if isinstance(m, Mapping)]
        # A message without a role is taken as the model's; tool or user turns are not scored.
        mine = [m for m in msgs if m.get("role", "assistant") == "assistant"]
        return content_text(mine[-1].get("content")) if mine else ""
    return ""


def aligned(values: Any, name: str, n: int) -> list[Any]:
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def optional_column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    """An optional column (all None when absent)."""
    return [None] * n if kwargs.get(name) is None else aligned(kwargs[name], name, n)


def ground_truth(
    kwargs: Mapping[str, Any], reward: str, columns: Sequence[str], parse: Callable[[Any, str], Any], n: int
) -> list[Any]:
    """``parse(value, column)`` per row of the first of ``columns`` present; ValueError names column and row."""
    column = next((c for c in columns if kwargs.get(c) is not None), None)
    if column is None:
        wanted = " or ".join(repr(c) for c in columns)
        raise ValueError(f"{reward} needs the ground-truth column {wanted}, which is missing "
                         f"(columns given: {sorted(kwargs)})")
    out = []
    for i, value in enumerate(aligned(kwargs[column], column, n)):
        try:
            out.append(parse(value, column))
        except ValueError as exc:
            ids = kwargs.get("id")
            ident = f" (id {ids[i]!r})" if isinstance(ids, Sequence) and len(ids) == n else ""
            raise ValueError(f"{reward}: column {column!r}, row {i}{ident}: {exc}") from exc
    return out


def image_id(image: Any) -> str | None:
    """A stable identity for the ``image`` column: the path itself, or a content hash.

    TRL may hand the reward a decoded PIL image instead of a path; its repr holds a memory address,
    so it is hashed by content to give the same progress key on every visit.
    """
    if image is None or isinstance(image, str):
        return image
    if isinstance(image, os.PathLike):
        return os.fspath(image)  # type: ignore[return-value]
    if isinstance(image, list | tuple):
        ids = [image_id(i) for i in image]
        return "|".join("" if i is None else i for i in ids)
    h = hashlib.sha256()
    if hasattr(image, "tobytes") and hasattr(image, "size"):  # PIL image or ndarray
        h.update(repr((getattr(image, "mode", None), getattr(image, "shape", None) or image.size)).encode())
        h.update(image.tobytes())
    else:
        h.update(repr(image).encode())
    return "sha256:" + h.hexdigest()


def per_item(
    completions: Sequence[Any], truths: Sequence[Any], name: str, score: Callable[[str, Any], float]
) -> list[float]:
    """``score(text, ground truth)`` per completion; an unexpected error scores that completion 0."""
    out = []
    for c, truth in zip(completions, truths, strict=True):
        try:
            out.append(score(completion_text(c), truth))
        except Exception as exc:  # defensive: one weird completion must not stop training
            log.warning("%s reward failed on a completion: %s", name, exc)
            out.append(0.0)
    return out


def sanitize(box: Box) -> BoxT:
    # Lenient areas may hold out-of-range or reversed corners: clip to the image and collapse a
    # reversed box to zero width/height, so geometry sees a valid (possibly empty) box.
    x1, y1, x2, y2 = (min(1.0, max(0.0, v)) for v in box.xyxy())
    return (x1, y1, max(x1, x2), max(y1, y2))


def gt_boxes(value: Any, column: str) -> list[BoxT]:
    """One row's GT boxes: ``gt_boxes``, or SIF-50K's ``normalized_solution_round`` (dict or JSON)."""
    if column == "normalized_solution_round":
        try:
            value = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc}): {reprlib.repr(value)}") from None
        if not isinstance(value, Mapping) or "bbox_3d" not in value:
            raise ValueError(f"expected a mapping with 'bbox_3d', got {reprlib.repr(value)}")
        value = value["bbox_3d"]
    try:
        arr = np.asarray([] if value is None else value, dtype=np.float64)
    except (TypeError, ValueError):  # ragged or non-numeric
        arr = np.full((1, 1), np.nan)
    if arr.size == 0:
        raise ValueError(f"no ground-truth boxes: {reprlib.repr(value)}")
    arr = arr[None, :] if arr.shape == (4,) else arr  # a single box given flat
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.all(np.isfinite(arr)):
        raise ValueError(f"not a list of [x1, y1, x2, y2] boxes: {reprlib.repr(value)}")
    # Spec 6: pixel or 0-1000 boxes here would make r_box silently ~0; the frame is per-axis [0, 1].
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"boxes outside [0, 1] (not per-axis normalised?): {reprlib.repr(value)}")
    if np.any(arr[:, 2] <= arr[:, 0]) or np.any(arr[:, 3] <= arr[:, 1]):
        raise ValueError(f"a box with x2 <= x1 or y2 <= y1: {reprlib.repr(value)}")
    return [tuple(float(v) for v in row) for row in arr]  # type: ignore[misc]


def gt_answer(value: Any, column: str) -> str:
    # NaN is how pandas spells a missing value; an empty answer cannot be matched by anything.
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        raise ValueError(f"no ground-truth answer: {reprlib.repr(value)}")
    return str(value)


@functools.lru_cache(maxsize=256)
def load_depth(path: str) -> np.ndarray:
    arr = np.load(path).astype(np.float32)
    arr.setflags(write=False)  # shared by every later call: nobody may modify the cached map
    return arr


def depth_array(value: Any, column: str) -> np.ndarray:
    """One row's depth map (a ``.npy`` path or an array); ValueError when it is unusable."""
    if value is None:
        raise ValueError("no depth map: None")
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise ValueError(f"depth map file not found: {path!r}")
        try:
            arr = load_depth(path)
        except Exception as exc:  # truncated file, pickled object, not an .npy at all
            raise ValueError(f"cannot read depth map {path!r}: {exc}") from exc
    else:
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"not a depth map: {reprlib.repr(value)}") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"a depth map must be a finite 2-D array, got shape {arr.shape}")
    return arr

