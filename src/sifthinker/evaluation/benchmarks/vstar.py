"""V* Bench (``craigwu/vstar_bench`` on the Hugging Face hub): 191 multiple-choice items.

Published file, read from the data folder: ``test_questions.jsonl``, one line per item with ``image``
(path relative to the folder, ``direct_attributes/sa_4690.jpg``), ``text`` (the question, its lettered
options one per line, then "Answer with the option's letter from the given choices directly."),
``category`` (``direct_attributes``, 115 items; ``relative_position``, 76), ``question_id`` and ``label``
(the option letter). Items: id = ``question_id``, question = the text's stem, options parsed from the
text (:func:`~.parsing.split_lettered`), answer = ``label``; the original text is kept in
``extra["text"]``. The prompt is the shared multiple-choice format (:func:`~.parsing.mc_prompt`), which
differs from the published text only in dropping "directly" (the SIF instruction asks to think first).

Scoring of one item:

* strict: :func:`~.parsing.parse_option` on the parsed ``<answer>``; no parseable answer is wrong and a
  format failure.
* original (E2): as SIFThinker's ``evaluation/vstar/eval_vstar.py``: right when the label is a
  (case-sensitive) substring of the first ``<answer>`` block's text ("(B) red, not C" counts for C; "b"
  does not count for B); no ``<answer>`` is wrong.

Metrics: ``overall`` = accuracy over all items (not the mean of the category accuracies) and
``category/<name>``, each with a Wilson interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring
from sifthinker.evaluation.benchmarks.parsing import (
    Unit,
    mc_prompt,
    original_answer,
    parse_answer,
    parse_option,
    require_responses,
    split_lettered,
    summarize,
)

__all__ = ["BENCHMARK", "VStar"]

_FILE = "test_questions.jsonl"


class VStar:
    name = "vstar"

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root)
        path = root / _FILE
        if not path.is_file():
            raise FileNotFoundError(f"V*: {path} not found (the published {_FILE})")
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if line.strip()]
        items = []
        for n, line in lines[:limit] if limit is not None else lines:
            try:
                items.append(_item(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: {e}") from e
        ids = [i.id for i in items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"V*: duplicate question_id(s) {sorted({x for x in ids if ids.count(x) > 1})[:5]}")
        missing = [i.images[0] for i in items if not (root / i.images[0]).is_file()]
        if missing:
            raise FileNotFoundError(f"V*: {len(missing)} image(s) missing under {root}, e.g. {missing[0]}")
        return items

    def prompt(self, item: Item) -> str:
        return mc_prompt(item.question, item.options or {})

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        require_responses(items, responses)
        results = [_score_item(i, responses[i.id], scoring) for i in items]
        units = [Unit(r.correct, ("overall", f"category/{r.category}")) for r in results]
        failures = sum(r.format_failure for r in results)
        if scoring is Scoring.STRICT:
            note = f"{failures} response(s) without a parseable <answer> scored wrong"
        else:
            note = (f"original (E2): right when the label is a substring of the first <answer>; {failures} "
                    "response(s) had no strictly parseable <answer>")
        return summarize(self.name, scoring, results, units, notes=[note])


def _item(row: Mapping[str, Any]) -> Item:
    stem, options = split_lettered(str(row["text"]))
    label = str(row["label"]).strip().upper()
    if label not in options:
        raise ValueError(f"label {row['label']!r} is not one of the options {sorted(options)}")
    return Item(id=str(row["question_id"]), benchmark="vstar", category=str(row["category"]), question=stem,
                images=[str(row["image"])], options=options, answer=label, extra={"text": str(row["text"])})


def _score_item(item: Item, response: str, scoring: Scoring) -> ItemResult:
    parsed = parse_answer(response)
    if scoring is Scoring.STRICT:
        letter = parse_option(parsed, item.options)
        note = "" if parsed is None or letter else "the answer names no single option"
        return ItemResult(item.id, item.category, letter == item.answer, parsed is None, parsed=letter, note=note)
    text = original_answer(response)
    return ItemResult(item.id, item.category, text is not None and (item.answer or "") in text, parsed is None,
                      parsed=text)


BENCHMARK = VStar()
