"""CV-Bench (Cambrian-1; ``nyu-visionx/CV-Bench`` on the Hugging Face hub): 2,638 multiple-choice items.

Published layouts, read from the data folder (the first complete one wins):

* annotations: ``test_2d.jsonl`` + ``test_3d.jsonl`` (the repository today), or ``test.jsonl`` (before
  the 2D/3D split), else the same rows from ``test_2d.parquet`` + ``test_3d.parquet`` or ``test.parquet``;
  fields ``idx``, ``type`` (2D/3D), ``task`` (Count, Relation, Depth, Distance), ``source`` (ADE20K, COCO,
  Omni3D), ``question``, ``choices``, ``answer`` (``(A)``), ``prompt``, ``filename``.
* images: ``<filename>`` under the folder (``img/2D/count/ade20k_10.png``). The repository no longer
  ships ``img/`` (its ``build_img.py`` recreates it from the parquet files), so a missing image is written
  there from the parquet files' ``image`` column, as that script does: the stored bytes when their format
  matches the file name, else re-encoded losslessly to it (some ``.png`` names hold JPEG bytes).

Items: id ``<type>-<idx>`` (``2D-787``), category = ``task``, source = ``source``, options lettered from
``choices``, answer = the letter. The prompt is the question with the lettered options (the
``prompt`` field's options, in the shared format of :func:`~.parsing.mc_prompt`).

Scoring of one item:

* strict: :func:`~.parsing.parse_option` on the parsed ``<answer>``; no parseable answer is wrong and a
  format failure.
* original: SIFThinker released no CV-Bench script (its README points to Cambrian's), so this is
  Cambrian-1's rule (``eval/eval/{ade,coco,omni}/*_test.py``; the Omni3D variant, which also accepts
  the choice's text, for every source) applied to the text SIFThinker's scripts read, the first ``<answer>`` block (the whole response without one): lower-case, keep what follows the
  last "answer is"/"answer:", strip ``.:,`` and brackets, keep the first character; right when it is
  the answer's letter or equals the answer's choice text. So "definitely D, not C" counts as D.

Metrics: ``category/<task>`` and ``source/<source>`` accuracies with Wilson intervals; ``accuracy_3d`` =
the Omni3D accuracy (interval: Omni3D's); ``accuracy_2d`` = mean(ADE20K, COCO) and ``overall`` =
(accuracy_2d + accuracy_3d) / 2, the official formula, without an interval (means of proportions over
different denominators are not one proportion). When ``limit`` leaves a source out, the means are over
the sources present (noted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring
from sifthinker.evaluation.benchmarks.parsing import (
    Unit,
    image_blob,
    iter_parquet,
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

__all__ = ["BENCHMARK", "CVBench", "cambrian_letter"]

_JSONL = (("test_2d.jsonl", "test_3d.jsonl"), ("test.jsonl",))
_PARQUET = (("test_2d.parquet", "test_3d.parquet"), ("test.parquet",))
_FIELDS = ("idx", "type", "task", "source", "question", "choices", "answer", "filename")
_SOURCES_2D = ("ADE20K", "COCO")
_SOURCE_3D = "Omni3D"


class CVBench:
    name = "cv-bench"

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root)
        jsonl, parquet = _layout(root, _JSONL), _layout(root, _PARQUET)
        if jsonl:
            rows = [json.loads(line) for p in jsonl for line in p.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
        elif parquet:
            rows = [r for p in parquet for r in read_parquet(p, _FIELDS)]
        else:
            raise FileNotFoundError(f"CV-Bench: no test_2d.jsonl + test_3d.jsonl, test.jsonl, or parquet "
                                    f"equivalents in {root}")
        rows = rows[:limit] if limit is not None else rows
        items = [_item(r, n) for n, r in enumerate(rows)]
        ids = [i.id for i in items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"CV-Bench: duplicate items {sorted({x for x in ids if ids.count(x) > 1})[:5]}")
        missing = {i.images[0] for i in items if not (root / i.images[0]).is_file()}
        if missing and parquet:
            _extract_images(root, parquet, missing)
            missing = {m for m in missing if not (root / m).is_file()}
        if missing:
            raise FileNotFoundError(f"CV-Bench: {len(missing)} image(s) missing under {root}, e.g. "
                                    f"{sorted(missing)[0]} (and no parquet file holds them)")
        return items

    def prompt(self, item: Item) -> str:
        return mc_prompt(item.question, item.options or {})

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        require_responses(items, responses)
        results = [_score_item(i, responses[i.id], scoring) for i in items]
        units = [Unit(r.correct, (f"category/{i.category}", f"source/{i.source}"))
                 for i, r in zip(items, results, strict=True)]
        units += [Unit(r.correct, ("accuracy_3d",)) for i, r in zip(items, results, strict=True)
                  if i.source == _SOURCE_3D]
        acc = summarize(self.name, scoring, results, units).metrics
        parts_2d = [acc[f"source/{s}"] for s in _SOURCES_2D if f"source/{s}" in acc]
        composite: dict[str, float] = {}
        if parts_2d:
            composite["accuracy_2d"] = sum(parts_2d) / len(parts_2d)
        halves = [v for v in (composite.get("accuracy_2d"), acc.get("accuracy_3d")) if v is not None]
        if halves:
            composite["overall"] = sum(halves) / len(halves)
        notes = []
        if len(parts_2d) < len(_SOURCES_2D) or "accuracy_3d" not in acc:
            notes.append("not every source is present: accuracy_2d and overall are over the sources present")
        failures = sum(r.format_failure for r in results)
        if scoring is Scoring.STRICT:
            notes.append(f"{failures} response(s) without a parseable <answer> scored wrong")
        else:
            notes.append("original: Cambrian-1's first-character rule on the first <answer> (or the whole "
                         f"response); {failures} response(s) had no strictly parseable <answer>")
        return summarize(self.name, scoring, results, units, composite=composite, notes=notes)


def cambrian_letter(text: str) -> str:
    """What Cambrian-1's CV-Bench scorer reads as the choice: at most one lower-case character."""
    t = text.lower().strip()
    for keyword in ("answer is", "answer is:", "answer:"):  # in this order, each splitting what is left
        if keyword in t:
            t = t.split(keyword)[-1]
    t = t.strip().rstrip(".:,").lstrip("(").rstrip(")")
    return t[:1]


def _score_item(item: Item, response: str, scoring: Scoring) -> ItemResult:
    parsed = parse_answer(response)
    if scoring is Scoring.STRICT:
        letter = parse_option(parsed, item.options)
        note = "" if parsed is None or letter else "the answer names no single option"
        return ItemResult(item.id, item.category, letter == item.answer, parsed is None, parsed=letter, note=note)
    text = original_answer(response)
    read = cambrian_letter(response if text is None else text)
    gt = (item.answer or "").lower()
    choice = (item.options or {}).get(item.answer or "", "").lower()
    return ItemResult(item.id, item.category, read in (gt, choice) and read != "", parsed is None, parsed=read)


def _item(row: Mapping[str, Any], n: int) -> Item:
    missing = [f for f in _FIELDS if f not in row]
    if missing:
        raise ValueError(f"CV-Bench row {n}: missing field(s) {missing}")
    options = lettered(list(row["choices"]))
    answer = str(row["answer"]).strip().strip("()").upper()
    if answer not in options:
        raise ValueError(f"CV-Bench row {n} (idx {row['idx']}): answer {row['answer']!r} is not one of "
                         f"{sorted(options)}")
    return Item(id=f"{row['type']}-{row['idx']}", benchmark="cv-bench", category=str(row["task"]),
                question=str(row["question"]).strip(), images=[str(row["filename"])], options=options,
                answer=answer, source=str(row["source"]), extra={"type": str(row["type"])})


def _layout(root: Path, layouts: Sequence[Sequence[str]]) -> list[Path] | None:
    for names in layouts:
        if all((root / n).is_file() for n in names):
            return [root / n for n in names]
    return None


def _extract_images(root: Path, parquet: Sequence[Path], wanted: set[str]) -> None:
    for path in parquet:
        for row in iter_parquet(path, ("filename", "image")):
            name = row.get("filename")
            if name in wanted and (blob := image_blob(row.get("image"))):
                dest = root / name
                if not dest.resolve().is_relative_to(root.resolve()):  # never write outside the data folder
                    raise ValueError(f"CV-Bench: filename {name!r} points outside {root}")
                write_image(dest, blob)


BENCHMARK = CVBench()
