"""TallyQA counting questions with several ground-truth boxes (the original's GRIT-filtered file).

Input: a JSON list (or JSON lines) of ``{"question", "answer", "image", "bboxs": [[x1, y1, x2, y2], ...]}``
with boxes in pixels; ``question_id`` / ``id`` and ``dataset`` are used when present. The answer must be
a whole number equal to the number of boxes: the boxes are the counted objects, and a trace that ends
on them must agree with its answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

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
    read_json,
    text,
)
from sifthinker.data.sources.jsonl import read_lines

_COUNTED_RE = re.compile(r"how many\s+([a-z][a-z -]*?)\s*(?:\b(?:are|is|can|do|does|were|in|on|there)\b|\?|$)",
                         re.IGNORECASE)


def counted(question: str) -> str:
    """What a counting question counts ("How many dogs are there?" -> "dogs"), for the step texts."""
    m = _COUNTED_RE.search(question)
    return m.group(1).strip().lower() if m and m.group(1).strip() else "objects"


class TallyQASource(FileSource):
    name = "tallyqa"
    default_depth = "dav2"
    missing_input = "give the TallyQA JSON (--input)"

    def _records(self) -> list:
        if self.input.suffix == ".jsonl":
            return [rec for _, rec in read_lines(self.input, "tallyqa")]
        data = read_json(self.input, "tallyqa")
        if not isinstance(data, list):
            raise SourceError(f"tallyqa: {self.input} is not a JSON list of records")
        return data

    def entries(self, seed: int) -> Iterator[Entry]:
        def candidates():
            for i, rec in enumerate(self._records()):
                qid = (rec.get("question_id", rec.get("id")) if isinstance(rec, dict) else None)
                key = f"{rec.get('image')}|{rec.get('question')}" if isinstance(rec, dict) else None
                yield f"tallyqa-{qid if qid is not None else i}", rec, key
        return self.in_split(candidates())

    def load(self, entry: Entry) -> SourceItem:
        rec = entry.raw
        if not isinstance(rec, dict):
            raise Rejected(f"not an object: a {type(rec).__name__}")
        question, answer = text(rec.get("question"), "question"), text(rec.get("answer"), "answer")
        if not answer.isdigit():
            raise Rejected(f"answer is not a count: {answer!r}")
        boxes = rec.get("bboxs")
        image, shown = self.locator.find(rec.get("image"))
        w, h = image_size(image, shown)
        px = check_boxes(boxes, w, h)
        if len(px) != int(answer):
            raise Rejected(f"answer does not match the boxes: {answer} but {len(px)} boxes")
        return SourceItem(
            uid=entry.uid, image=None, depth=None, question=question, answer=str(int(answer)), answer_type="number",
            category="counting", gt_boxes_px=px, evidence_names=[counted(question)] * len(px),
            dataset=str(rec.get("dataset") or "tallyqa"), image_file=image, depth_file=colour_depth(self.spec_, self.locator, beside_depth(shown)),
            size=(w, h), source_image=shown,
        )
