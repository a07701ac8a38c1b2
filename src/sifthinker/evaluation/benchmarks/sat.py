"""SAT, Spatial Aptitude Training (``array/SAT`` on the Hugging Face hub): the real-image ``test`` split.

Published file, read from the data folder: ``SAT_<split>.parquet`` (``SAT_test.parquet`` by default:
150 questions, some on two images), columns ``image_bytes`` (a list of encoded images: raw bytes, or the
Hugging Face ``{"bytes", "path"}`` struct), ``question``, ``answers`` (the choices), ``question_type`` and
``correct_answer`` (one of the choices' text).

Images are written once beside the data, ``SAT_<split>_images/<index>_<k>.<png|jpg>`` (the stored bytes,
rewritten only when missing or of another size); the items' ``images`` are those paths, relative to the
folder, all of an item's images in order. Items: id ``<split>-<row index>``, category =
``question_type``, options = the choices lettered in a fixed per-item shuffled order (the dataset's card
asks to randomise them: stored order may give the answer away), answer = the correct choice's letter;
``extra`` keeps the stored ``answers`` order and ``num_images``.

Multi-image items (E5): the model gets all of an item's images (the runner adds each one's depth image
after them). A setting that cannot take them builds ``SATBenchmark(max_images=1)``: such items are then
skipped (``ItemResult.correct`` None, a note), excluded from every denominator and counted in
``skipped``, and ``BenchmarkScore.notes`` says so.

Scoring of one item:

* strict (E4 fixed): the parsed ``<answer>`` names an option by letter or by a choice's exact text
  (:func:`~.parsing.parse_option`); no parseable answer is wrong and a format failure.
* original, as SIFThinker's ``evaluation/sat/eval_sat.py``: the lower-cased response's first ``<answer>``
  block, the ground truth when there is none (so it counts right, E4); the prediction is the first stored
  choice whose lower-cased text occurs in it. Every multi-image item is skipped and still counted in the
  denominator as wrong (E5), whatever ``max_images`` says.

E3 (the original evaluated ``static``, a single-image training split) is a choice of data, not of
scoring: ``SATBenchmark(split="static")`` reads ``SAT_static.parquet`` (2.6 GB, 127K rows; ``limit`` reads
only the rows it keeps) and, with ``original`` scoring, scores it as the original did. The prompt still
differs: the original listed the choices unlettered in stored order ("Choices:\n- a\n- b").
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring
from sifthinker.evaluation.benchmarks.parsing import (
    Unit,
    image_blob,
    lettered,
    mc_prompt,
    original_answer,
    parse_answer,
    parse_option,
    read_parquet,
    require_responses,
    summarize,
    write_image,
)

__all__ = ["BENCHMARK", "SATBenchmark"]

_COLUMNS = ("image_bytes", "question", "answers", "question_type", "correct_answer")
_EXT = {"PNG": ".png", "JPEG": ".jpg"}


class SATBenchmark:
    name = "sat"

    def __init__(self, split: str = "test", max_images: int | None = None) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        self.split, self.max_images = split, max_images

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root)
        path = root / f"SAT_{self.split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"SAT: {path} not found (the published SAT_{self.split}.parquet)")
        rows = read_parquet(path, _COLUMNS, limit)
        for column in _COLUMNS:
            if rows and column not in rows[0]:
                raise ValueError(f"{path}: no column {column!r}")
        return [self._item(root, i, row) for i, row in enumerate(rows)]

    def prompt(self, item: Item) -> str:
        return mc_prompt(item.question, item.options or {})

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        if scoring is Scoring.ORIGINAL:
            skip = {i.id for i in items if len(i.images) > 1}
        else:
            skip = {i.id for i in items if self.max_images is not None and len(i.images) > self.max_images}
        require_responses(items, responses, skip=skip)
        results = [_score_item(i, responses.get(i.id), scoring, i.id in skip, self.max_images) for i in items]
        units = [Unit(r.correct, ("overall", f"category/{r.category}")) for r in results]
        failures = sum(r.format_failure for r in results)
        notes = []
        if scoring is Scoring.STRICT:
            notes.append(f"{failures} response(s) without a parseable <answer> scored wrong")
            if skip:
                notes.append(f"{len(skip)} multi-image item(s) skipped: this setting takes at most "
                             f"{self.max_images} image(s); excluded from every denominator")
        else:
            lenient = sum(r.note.startswith("no <answer>") for r in results)
            notes.append(f"{lenient} response(s) without an <answer> counted right (E4)")
            if skip:
                notes.append(f"{len(skip)} multi-image item(s) skipped as the original script does and counted "
                             "wrong in the denominator (E5)")
            if self.split != "static":
                notes.append(f"scored on the {self.split} split; the original script evaluated the static "
                             "training split (E3): SATBenchmark(split='static') evaluates that split")
        return summarize(self.name, scoring, results, units, skipped=len(skip), notes=notes)

    def _item(self, root: Path, index: int, row: Mapping[str, Any]) -> Item:
        where = f"SAT_{self.split}.parquet row {index}"
        choices = [str(c) for c in row["answers"] or []]
        cells = list(row["image_bytes"] or [])
        blobs = [b for b in map(image_blob, cells) if b]
        if len(choices) < 2 or not blobs or len(blobs) != len(cells):
            raise ValueError(f"{where}: needs at least two answers and one image, and no empty image")
        gt = str(row["correct_answer"]).strip().lower()
        if sum(c.strip().lower() == gt for c in choices) != 1:
            raise ValueError(f"{where}: correct_answer {row['correct_answer']!r} is not exactly one of {choices}")
        images = [self._image(root, index, k, blob) for k, blob in enumerate(blobs)]
        shuffled = choices[:]
        # Seeded by split and row: the same order on every run and machine, unrelated to the stored one.
        random.Random(f"sat/{self.split}/{index}").shuffle(shuffled)
        options = lettered(shuffled)
        answer = next(k for k, v in options.items() if v.strip().lower() == gt)
        return Item(id=f"{self.split}-{index}", benchmark="sat", category=str(row["question_type"]),
                    question=str(row["question"]).strip(), images=images, options=options, answer=answer,
                    extra={"answers": choices, "correct_answer": str(row["correct_answer"]),
                           "num_images": len(images)})

    def _image(self, root: Path, index: int, k: int, blob: bytes) -> str:
        ext = _EXT.get(_format(blob), ".img")
        rel = f"SAT_{self.split}_images/{index:06d}_{k}{ext}"
        dest = root / rel
        if not dest.is_file() or dest.stat().st_size != len(blob):
            write_image(dest, blob)
        return rel


def _format(blob: bytes) -> str | None:
    with Image.open(io.BytesIO(blob)) as im:  # reads the header only
        return im.format


def _score_item(item: Item, response: str | None, scoring: Scoring, skipped: bool,
                max_images: int | None) -> ItemResult:
    n_images = len(item.images)
    if skipped and scoring is Scoring.STRICT:
        return ItemResult(item.id, item.category, None, False,
                          note=f"skipped: {n_images} images, the setting takes at most {max_images} (E5 fixed)")
    if skipped:
        return ItemResult(item.id, item.category, False, False,
                          note=f"skipped by the original script ({n_images} images), counted wrong (E5)")
    parsed = parse_answer(response)
    if scoring is Scoring.STRICT:
        letter = parse_option(parsed, item.options)
        note = "" if parsed is None or letter else "the answer names no single option"
        return ItemResult(item.id, item.category, letter == item.answer, parsed is None, parsed=letter, note=note)
    gt = str(item.extra["correct_answer"]).strip().lower()
    text = original_answer((response or "").lower())
    note = ""
    if text is None:
        text, note = gt, "no <answer>: the ground truth stands in for it (E4)"
    pred = next((c.lower() for c in item.extra["answers"] if c.lower() in text), None)
    return ItemResult(item.id, item.category, pred == gt, parsed is None, parsed=pred, note=note)


BENCHMARK = SATBenchmark()
