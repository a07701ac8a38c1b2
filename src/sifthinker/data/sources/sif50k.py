"""The released SIF-50K JSON (method spec, section 2) imported as our records.

Each record keeps its trace (the assistant message, validated strictly: an invalid one is rejected with
the problem) and its normalised GT boxes as they are; the image is copied byte for byte; the depth, which
SIF-50K ships only as a colour PNG, is decoded once to a float map (``--depth colour``, the default) or
estimated again (``--depth dav2``). Paths in the JSON look like ``../data/flickr30k/36979.jpg``: they are
resolved against ``--image-root`` (default: the JSON's folder), see :class:`Locator`.

The VisCoT-derived records of SIF-50K carry defect D1 (boxes read per axis from a square-padded canvas);
an import cannot undo it. Rebuild from Visual-CoT (``--source viscot``) for corrected boxes.
"""

from __future__ import annotations

from collections.abc import Iterator

from sifthinker.data.sources.base import (
    Entry,
    FileSource,
    Rejected,
    SourceError,
    SourceItem,
    colour_depth,
    image_size,
    read_json,
    text,
)
from sifthinker.method import trace as sif_trace
from sifthinker.method.answers import infer_answer_type


def _norm_boxes(nsr: object) -> list[list[float]]:
    raw = nsr.get("bbox_3d") if isinstance(nsr, dict) else None
    if not isinstance(raw, list) or not raw:
        raise Rejected("no ground-truth boxes (normalized_solution_round.bbox_3d)")
    out = []
    for b in raw:
        if (not isinstance(b, list) or len(b) != 4
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in b)):
            raise Rejected(f"malformed box: {b!r}")
        x1, y1, x2, y2 = (float(v) for v in b)
        if x2 <= x1 or y2 <= y1:
            raise Rejected(f"empty or inverted box: {b!r}")
        if min(x1, y1) < 0 or max(x2, y2) > 1:
            raise Rejected(f"box outside the image: {b!r} not in [0, 1]")
        out.append([round(x1, 3), round(y1, 3), round(x2, 3), round(y2, 3)])
    return out


def _assistant(messages: object) -> str:
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str):
                return m["content"]
    raise Rejected("no assistant message")


class SIF50KSource(FileSource):
    name = "sif50k"
    default_depth = "colour"
    missing_input = "give the released JSON (--input .../SIF-50K.json)"

    def entries(self, seed: int) -> Iterator[Entry]:
        data = read_json(self.input, "sif50k")
        if not isinstance(data, list):
            raise SourceError(f"sif50k: {self.input} is not a JSON list of records")
        return self.in_split((f"sif50k-{i:06d}", rec, f"{rec.get('image')}|{rec.get('problem')}"
                              if isinstance(rec, dict) else None) for i, rec in enumerate(data))

    def load(self, entry: Entry) -> SourceItem:
        rec = entry.raw
        if not isinstance(rec, dict):
            raise Rejected(f"not an object: a {type(rec).__name__}")
        question, answer = text(rec.get("problem"), "question (problem)"), text(rec.get("response"), "answer (response)")
        nsr = rec.get("normalized_solution_round")
        if isinstance(nsr, dict) and nsr.get("illegal_content"):
            raise Rejected("marked illegal_content")
        gt = _norm_boxes(nsr)
        trace = _assistant(rec.get("messages"))
        problems = sif_trace.validate(trace)
        if problems:
            raise Rejected(f"invalid trace: {problems[0]}")
        image, shown = self.locator.find(rec.get("image"))
        w, h = image_size(image, shown)
        depth_file = colour_depth(self.spec_, self.locator, rec.get("depth_image"))
        return SourceItem(
            uid=entry.uid, image=None, depth=None, question=question, answer=answer,
            answer_type=infer_answer_type(answer), category=str(rec.get("dataset") or "sif50k"),
            gt_boxes_px=[(b[0] * w, b[1] * h, b[2] * w, b[3] * h) for b in gt], evidence_names=[],
            dataset=str(rec.get("dataset") or "sif50k"), image_file=image, depth_file=depth_file, size=(w, h),
            gt_norm=gt, trace=trace.strip(), source_image=shown,
        )
