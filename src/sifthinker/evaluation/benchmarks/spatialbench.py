"""SpatialBench (SpatialBot; ``RussRobin/SpatialBench`` on the Hugging Face hub).

Published files, read from the data folder: ``positional.json``, ``existence.json``, ``counting.json``,
``reach.json`` and ``size.json``, each a list of ``{"id"?, "image": path or [paths], "question",
"answer"}`` with image paths relative to the folder (``positional/xxx.jpg``); the ``*_d`` metric depth
maps beside them are not the model's depth input. Items get the ids ``<category>-<id>`` (the list index
when a record has no id, as the official script does) and ``category`` = the file's stem.

Pairs: in ``existence``, ``reach`` and ``size`` the items at indices (2k, 2k+1) ask about one scene with
opposite answers; a pair is right only when both items are (``pair_id`` ``<category>-<k>``). Category
accuracy is over pairs there and over items in ``positional`` and ``counting``; ``overall`` is the mean
of the category accuracies (no interval: not one proportion). An item whose partner is not among the
scored items (skipped upstream) leaves its pair out: its result is marked skipped, with a note.

Scoring of one item:

* strict: the ground-truth word occurs in the parsed ``<answer>`` on word boundaries, ignoring case; a
  response without a parseable ``<answer>`` is wrong and a format failure.
* original: as the SIFThinker script ``evaluation/spatialbot/bunny/eval/eval_spatialbench.py`` does: the
  first ``<answer>`` block's text; none (or empty) counts right (E1); otherwise plain, case-sensitive
  substring ``gt in answer`` ("no" is in "not", "3" in "13", "Yes" not in "yes"). (SpatialBot's own
  ``bunny/eval/eval_spatialbench.py`` applies the same test to the whole response, having no ``<answer>``.)

Original mode also reports ``official/<category>`` and ``official/overall``, the numbers that script
(whose aggregation is SpatialBot's, unchanged) prints, which differ from the pair rule
above: ``reach`` and ``size`` score (items right + pairs right) / (3 x pairs), ``existence`` pairs,
``positional`` items, and ``counting`` is 1 - the mean relative error ``|int(answer) - gt| / gt`` (the
script prints it x100). Where that script would crash (an answer ``int()`` cannot read, a ground truth 0),
the item's error counts 1 (0 for an exact answer), with a note.

``format_failures`` counts responses without a strictly parseable ``<answer>`` in both modes.
``limit`` keeps the first N items in file order (positional, existence, counting, reach, size), never half
a pair.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item, ItemResult, Scoring
from sifthinker.evaluation.benchmarks.parsing import (
    Unit,
    contains_word,
    original_answer,
    parse_answer,
    require_responses,
    summarize,
)

__all__ = ["BENCHMARK", "CATEGORIES", "PAIRED", "SpatialBench"]

CATEGORIES = ("positional", "existence", "counting", "reach", "size")
PAIRED = frozenset({"existence", "reach", "size"})


class SpatialBench:
    name = "spatialbench"

    def load(self, root: Path, limit: int | None = None) -> list[Item]:
        root = Path(root)
        items: list[Item] = []
        for category in CATEGORIES:
            path = root / f"{category}.json"
            if not path.is_file():
                raise FileNotFoundError(f"SpatialBench: {path} not found (expected the published "
                                        f"{', '.join(c + '.json' for c in CATEGORIES)})")
            records = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(records, list):
                raise ValueError(f"{path}: expected a JSON list of items")
            if category in PAIRED and len(records) % 2:
                raise ValueError(f"{path}: {len(records)} items; pairs (2k, 2k+1) need an even number")
            items.extend(_item(category, i, rec, path) for i, rec in enumerate(records))
        items = _first(items, limit)
        ids = [i.id for i in items]
        if len(set(ids)) != len(ids):
            dup = sorted({x for x in ids if ids.count(x) > 1})
            raise ValueError(f"SpatialBench: duplicate item ids {dup[:5]}")
        missing = [p for i in items for p in i.images if not (root / p).is_file()]
        if missing:
            raise FileNotFoundError(f"SpatialBench: {len(missing)} image(s) missing under {root}, e.g. {missing[0]}")
        return items

    def prompt(self, item: Item) -> str:
        return item.question  # published questions already say what to answer ("... yes or no?")

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore:
        scoring = Scoring(scoring)
        require_responses(items, responses)
        results = [_score_item(item, responses[item.id], scoring) for item in items]
        pairs, orphans = _pairs(items)
        right = {r.id: bool(r.correct) for r in results}
        # An item whose partner was not scored (skipped upstream) leaves its pair unscorable.
        results = [_orphaned(r) if r.id in orphans else r for r in results]
        units = [Unit(right[i.id], (f"category/{i.category}",)) for i in items if i.category not in PAIRED]
        units += [Unit(right[a.id] and right[b.id], (f"category/{a.category}",)) for a, b in pairs]
        per_category = summarize(self.name, scoring, results, units).metrics  # for the mean below
        present = [c for c in CATEGORIES if f"category/{c}" in per_category]
        composite = {"overall": sum(per_category[f"category/{c}"] for c in present) / len(present)} \
            if present else {}
        notes = []
        failures = sum(r.format_failure for r in results)
        if scoring is Scoring.STRICT:
            notes.append(f"{failures} response(s) without a parseable <answer> scored wrong")
        else:
            lenient = sum(r.note.startswith("no <answer>") for r in results)
            notes.append(f"{lenient} response(s) without an <answer> counted right (E1); matching is the "
                         "original case-sensitive substring test")
            official, official_notes = _official(items, results, pairs)
            composite.update(official)
            notes += official_notes
        if orphans:
            notes.append(f"{len(orphans)} item(s) whose pair partner was not scored: their pairs are left out")
        if len(present) < len(CATEGORIES):
            notes.append(f"overall is the mean over the categories present: {', '.join(present) or 'none'}")
        return summarize(self.name, scoring, results, units, composite=composite, notes=notes)


def _item(category: str, index: int, rec: object, path: Path) -> Item:
    if not isinstance(rec, dict) or not {"image", "question", "answer"} <= set(rec):
        raise ValueError(f"{path}[{index}]: expected an object with image, question and answer")
    images = [rec["image"]] if isinstance(rec["image"], str) else list(rec["image"])
    if not images or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{path}[{index}]: image must be a path or a list of paths")
    return Item(id=f"{category}-{rec.get('id', index)}", benchmark="spatialbench", category=category,
                question=str(rec["question"]), images=images, answer=str(rec["answer"]).strip(),
                pair_id=f"{category}-{index // 2}" if category in PAIRED else None, extra={"index": index})


def _first(items: list[Item], limit: int | None) -> list[Item]:
    if limit is None:
        return items
    out: list[Item] = []
    for item in items:
        # The first of a pair enters only with room for its partner.
        need = 2 if item.pair_id and item.extra["index"] % 2 == 0 else 1
        if len(out) + need > limit:
            break
        out.append(item)
    return out


def _pairs(items: Sequence[Item]) -> tuple[list[tuple[Item, Item]], set[str]]:
    """The complete pairs, and the ids of items whose partner is absent."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        if item.category in PAIRED:
            groups.setdefault(item.pair_id or "", []).append(item)
    bad = [k for k, g in groups.items() if len(g) > 2]
    if bad:
        raise ValueError(f"SpatialBench: more than two items in pair(s) {bad[:5]}")
    return [(g[0], g[1]) for g in groups.values() if len(g) == 2], {g[0].id for g in groups.values() if len(g) == 1}


def _orphaned(result: ItemResult) -> ItemResult:
    note = "; ".join(filter(None, [result.note, "pair partner not scored: pair left out"]))
    return replace(result, correct=None, note=note)


def _score_item(item: Item, response: str, scoring: Scoring) -> ItemResult:
    gt = item.answer or ""
    parsed = parse_answer(response)
    if scoring is Scoring.STRICT:
        return ItemResult(item.id, item.category, parsed is not None and contains_word(parsed, gt),
                          parsed is None, parsed=parsed)
    text = original_answer(response)
    if not text:  # the script substitutes the ground truth for a missing or empty answer
        return ItemResult(item.id, item.category, True, parsed is None, parsed=text,
                          note="no <answer>: counted right (E1)")
    return ItemResult(item.id, item.category, gt in text, parsed is None, parsed=text)


def _official(items: Sequence[Item], results: Sequence[ItemResult],
              pairs: Sequence[tuple[Item, Item]]) -> tuple[dict[str, float], list[str]]:
    """The category numbers the original script prints (as fractions), from the original item results."""
    right = {r.id: bool(r.correct) for r in results}
    text = {r.id: r.parsed for r in results}
    out: dict[str, float] = {}
    notes: list[str] = []
    for category in CATEGORIES:
        cat_items = [i for i in items if i.category == category]
        cat_pairs = [p for p in pairs if p[0].category == category]
        if not (cat_pairs if category in PAIRED else cat_items):
            continue
        if category in ("reach", "size"):
            points = sum(right[a.id] + right[b.id] + (right[a.id] and right[b.id]) for a, b in cat_pairs)
            out[f"official/{category}"] = points / (3 * len(cat_pairs))
        elif category == "existence":
            out[f"official/{category}"] = sum(right[a.id] and right[b.id] for a, b in cat_pairs) / len(cat_pairs)
        elif category == "positional":
            out[f"official/{category}"] = sum(right[i.id] for i in cat_items) / len(cat_items)
        else:
            errors, crashes = [], 0
            for i in cat_items:
                answer = text[i.id] or i.answer or ""  # a missing answer was replaced by the ground truth
                error, crashed = _relative_error(answer, i.answer or "")
                errors.append(error)
                crashes += crashed
            out[f"official/{category}"] = 1 - sum(errors) / len(errors)
            if crashes:
                notes.append(f"official/counting: {crashes} item(s) on which the original script would stop "
                             "(an answer int() cannot read, or a ground truth of 0); each counted as a 100% "
                             "error (0 when exact)")
    if out:
        out["official/overall"] = sum(out.values()) / len(out)
    return out, notes


def _relative_error(answer: str, gt: str) -> tuple[float, bool]:
    """|int(answer) - int(gt)| / int(gt) as the original counts it, and whether it would have crashed."""
    try:
        pred, truth = int(answer), int(gt)
    except ValueError:
        return 1.0, True
    if truth == 0:  # the script divides by the ground truth
        return (0.0 if pred == 0 else 1.0), True
    return abs(pred - truth) / truth, False


BENCHMARK = SpatialBench()
