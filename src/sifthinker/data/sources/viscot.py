"""Visual-CoT (``viscot_363k.json`` plus its images) with the paper's subset filter and box handling.

Filter (method spec, section 2): the text and document subsets (docvqa, dude, textvqa, sroie,
infographicsvqa, textcap) are dropped; of every other subset at most ``max_per_subset`` items are kept,
the first in file order. A record looks like::

    {"dataset": "flickr30k", "question_id": 17, "image": ["cot/flickr30k/1.jpg", "cot/flickr30k/1.jpg###[446, 246, 502, 345]"],
     "conversations": [{"from": "human", "value": "<image>\\nQ? Please provide the bounding box coordinate of ..."},
                       {"from": "gpt", "value": "[0.352, 0.256, 0.612, 0.756]"},
                       {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "the answer"}]}

Boxes (defect D1): the normalised box is relative to the square canvas of side max(W, H) on which
LLaVA-style training pads the image (centred). ``box_frame="pixel"`` (ours) uses the pixel box after
``###`` when there is one, else converts the normalised box from that canvas (``geometry.Frame.
VISCOT_SQUARE``); ``"padded"`` reproduces the original, which read the normalised box per axis.
Images are looked up under ``image_root`` as written (``cot/<subset>/<file>``) and without the
``cot/`` folder (the published archives unpack to ``cot_image_data/<subset>/<file>``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator

from sifthinker.data.sources.base import (
    Entry,
    FileSource,
    Rejected,
    SourceError,
    SourceItem,
    SourceSpec,
    beside_depth,
    check_boxes,
    colour_depth,
    image_size,
    read_json,
    text,
)
from sifthinker.method.answers import infer_answer_type

EXCLUDED_SUBSETS = ("docvqa", "dude", "textvqa", "sroie", "infographicsvqa", "textcap")
BOX_FRAMES = ("pixel", "padded")
_ASK_BOX_RE = re.compile(r"\s*Please provide the bounding box coordinate of the region that can help you answer "
                         r"the question better\.?\s*", re.IGNORECASE)
_NUM_LIST_RE = re.compile(r"\[\s*-?[\d.eE+-]+\s*(?:,\s*-?[\d.eE+-]+\s*){3}\]")


def parse_boxes(value: object) -> list[list[float]]:
    """The normalised boxes of the gpt turn: ``"[x1, y1, x2, y2]"`` (several allowed)."""
    if not isinstance(value, str):
        raise Rejected("no box in the second conversation turn")
    found = _NUM_LIST_RE.findall(value)
    if not found:
        raise Rejected(f"no box: {value[:60]!r}")
    return [[float(v) for v in json.loads(m)] for m in found]


def _pixel_box(images: object) -> list[float] | None:
    """The pixel box Visual-CoT appends to the second image entry (``path###[x1, y1, x2, y2]``)."""
    if isinstance(images, list) and len(images) > 1 and isinstance(images[1], str) and "###" in images[1]:
        try:
            box = json.loads(images[1].split("###", 1)[1])
        except ValueError:
            return None
        if isinstance(box, list) and len(box) == 4:
            return [float(v) for v in box]
    return None


class VisCoTSource(FileSource):
    name = "viscot"
    default_depth = "dav2"
    missing_input = "give viscot_363k.json (--input)"

    def __init__(self, spec: SourceSpec):
        super().__init__(spec)
        self.max_per_subset = int(spec.option("max_per_subset", 10_000))
        self.box_frame = spec.option("box_frame", "pixel")
        if self.box_frame not in BOX_FRAMES:
            raise SourceError(f"viscot: box frame must be one of {list(BOX_FRAMES)}, got {self.box_frame!r}")
        self.kept: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._kept_records: list[tuple[int, object]] | None = None

    def image_roots(self, spec: SourceSpec, here: str) -> list[str]:
        # by default: beside the JSON, or in the unpacked archives' folder there
        return [spec.image_root] if spec.image_root else [here, f"{here}/cot_image_data",
                                                          f"{here}/cot_images_tar_split/cot_image_data"]

    def _filtered(self) -> list[tuple[int, object]]:
        """(position in the file, record) of every record the paper's filter keeps, in file order."""
        if self._kept_records is None:
            data = read_json(self.input, "viscot")
            if not isinstance(data, list):
                raise SourceError(f"viscot: {self.input} is not a JSON list of records")
            kept = []
            for i, rec in enumerate(data):
                subset = str(rec.get("dataset", "")) if isinstance(rec, dict) else ""
                if subset in EXCLUDED_SUBSETS:
                    self.dropped[f"{subset} (text subset)"] += 1
                elif self.kept[subset] >= self.max_per_subset:
                    self.dropped[f"{subset} (over {self.max_per_subset})"] += 1
                else:
                    self.kept[subset] += 1
                    kept.append((i, rec))
            self._kept_records = kept
        return self._kept_records

    def entries(self, seed: int) -> Iterator[Entry]:
        def candidates():
            for i, rec in self._filtered():
                subset = str(rec.get("dataset", "")) if isinstance(rec, dict) else ""
                qid = rec.get("question_id") if isinstance(rec, dict) else None
                img = rec.get("image") if isinstance(rec, dict) else None
                first = img[0] if isinstance(img, list) and img else img
                conv = rec.get("conversations") if isinstance(rec, dict) else None
                q = conv[0].get("value") if isinstance(conv, list) and conv and isinstance(conv[0], dict) else None
                yield f"viscot-{subset or 'unknown'}-{qid if qid is not None else i}", rec, f"{first}|{q}"
        return self.in_split(candidates())

    def describe(self) -> dict:
        """What the subset filter kept and dropped over the whole file (not only the part a build used)."""
        self._filtered()
        return {"kept_per_subset": dict(sorted(self.kept.items())), "dropped": dict(sorted(self.dropped.items()))}

    def load(self, entry: Entry) -> SourceItem:
        rec = entry.raw
        if not isinstance(rec, dict):
            raise Rejected(f"not an object: a {type(rec).__name__}")
        conv = rec.get("conversations")
        if not isinstance(conv, list) or len(conv) < 4 or not all(isinstance(c, dict) for c in conv):
            raise Rejected("expected 4 conversation turns (question, box, image, answer)")
        question = text(_ASK_BOX_RE.sub(" ", str(conv[0].get("value", "")).replace("<image>", "")), "question")
        answer = text(conv[-1].get("value"), "answer")
        norm = parse_boxes(conv[1].get("value"))
        images = rec.get("image")
        rel = images[0] if isinstance(images, list) and images else images
        alt = (rel.removeprefix("cot/"),) if isinstance(rel, str) and rel.startswith("cot/") else ()
        image, shown = self.locator.find(rel, extra=alt)
        w, h = image_size(image, shown)
        pixel = _pixel_box(images)
        if self.box_frame == "padded":  # D1, the original: the square canvas read per axis
            boxes = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in norm]
        elif pixel is not None and len(norm) == 1:
            boxes = [pixel]
        else:
            from sifthinker.method.geometry import (  # here: it imports scipy (1-2 s per build worker)
                Frame,
                to_norm,
            )

            boxes = [[v * s for v, s in zip(to_norm(tuple(b), Frame.VISCOT_SQUARE, w, h), (w, h, w, h), strict=True)]
                     for b in norm]
        subset = str(rec.get("dataset") or "viscot")
        return SourceItem(
            uid=entry.uid, image=None, depth=None, question=question, answer=answer,
            answer_type=infer_answer_type(answer), category=subset,
            gt_boxes_px=check_boxes(boxes, w, h, slack=1.0), evidence_names=[], dataset=subset,
            image_file=image, size=(w, h), source_image=shown,
            depth_file=colour_depth(self.spec_, self.locator, beside_depth(rel), *map(beside_depth, alt)),
        )
