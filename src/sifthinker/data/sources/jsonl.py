"""Users' own data: one JSON object per line (docs/data.md, "The jsonl format").

    {"id": "kitchen-0001", "image": "images/kitchen.jpg", "question": "How many cups are on the table?",
     "answer": "2", "boxes": [[10, 20, 110, 140], [300, 40, 380, 150]], "category": "counting"}

``id``, ``image`` (relative to ``--image-root``, default the file's folder, or absolute), ``question``,
``answer`` and ``boxes`` (pixels of the image, x1 y1 x2 y2, the evidence the answer rests on) are
required; ``category`` (default ``general``), ``answer_type`` (default: inferred from the answer),
``names`` (what each box shows, for the template narrator), ``depth`` (a float depth map, ``.npy`` or
16-bit ``.png``, 0 near .. 1 far, used by ``--depth gt``) and ``depth_image`` (a colour depth PNG, used
by ``--depth colour``; default ``<image stem>_d.png`` beside the image) are optional. A line that is not
a JSON object is rejected with its line number, like any other bad item.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sifthinker.data.sources.base import (
    Entry,
    FileSource,
    Rejected,
    SourceError,
    SourceItem,
    beside_depth,
    check_boxes,
    colour_depth,
    image_size,
    text,
)
from sifthinker.method.answers import ANSWER_TYPES, infer_answer_type
from sifthinker.method.depth import load_depth_map


def read_lines(path: Path, what: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) of every non-blank line; a bad line gives a marker, not an error."""
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed below; lines stream
    except FileNotFoundError as e:
        raise SourceError(f"{what}: {path} does not exist") from e
    except OSError as e:
        raise SourceError(f"{what}: cannot read {path}: {e.strerror}") from e
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except ValueError as e:
                yield n, _BadLine(f"invalid JSON: line {n} ({' '.join(str(e).split())[:80]})")


class _BadLine(str):
    """A line that did not parse: its rejection reason."""


class JsonlSource(FileSource):
    name = "jsonl"
    default_depth = "dav2"
    missing_input = "give the file (--input items.jsonl)"

    def entries(self, seed: int) -> Iterator[Entry]:
        def candidates():
            for line, rec in read_lines(self.input, "jsonl"):
                rid = rec.get("id") if isinstance(rec, dict) else None
                uid = str(rid).strip() if isinstance(rid, str | int) and str(rid).strip() else f"jsonl-line{line}"
                key = f"{rec.get('image')}|{rec.get('question')}" if isinstance(rec, dict) else None
                yield uid, (line, rec), key
        return self.in_split(candidates())

    def load(self, entry: Entry) -> SourceItem:
        line, rec = entry.raw
        if isinstance(rec, _BadLine):
            raise Rejected(str(rec))
        if not isinstance(rec, dict):
            raise Rejected(f"not an object: line {line} is a {type(rec).__name__}")
        if not isinstance(rec.get("id"), str | int) or not str(rec.get("id")).strip():
            raise Rejected(f"no id: line {line}")
        question, answer = text(rec.get("question"), "question"), text(rec.get("answer"), "answer")
        answer_type = rec.get("answer_type") or infer_answer_type(answer)
        if answer_type not in ANSWER_TYPES:
            raise Rejected(f"unknown answer_type: {answer_type!r} (one of {list(ANSWER_TYPES)})")
        image, shown = self.locator.find(rec.get("image"))
        w, h = image_size(image, shown)
        boxes = check_boxes(rec.get("boxes"), w, h)
        names = rec.get("names")
        if not (isinstance(names, list) and len(names) == len(boxes) and all(isinstance(x, str) and x.strip()
                                                                             for x in names)):
            names = []
        depth = None
        if rec.get("depth") and self.spec_.option("depth") == "gt":
            path, dshown = self.locator.find(rec["depth"], "depth map")
            try:
                depth = load_depth_map(path)
            except (OSError, ValueError) as e:
                raise Rejected(f"unreadable depth map: {dshown} ({' '.join(str(e).split())[:120]})") from e
            if depth.shape != (h, w) or not np.isfinite(depth).all():
                raise Rejected(f"depth map does not match the image: {dshown} is not a finite {w}x{h} map")
            depth = np.clip(depth, 0.0, 1.0)
        depth_file = colour_depth(self.spec_, self.locator, rec.get("depth_image") or beside_depth(shown))
        category = str(rec.get("category") or "general").strip() or "general"
        return SourceItem(
            uid=entry.uid, image=None, depth=depth, question=question, answer=answer, answer_type=answer_type,
            category=category, gt_boxes_px=boxes, evidence_names=names, dataset=str(rec.get("dataset") or "jsonl"),
            image_file=image, depth_file=depth_file, size=(w, h), source_image=shown,
        )
