"""The shared shape of every benchmark: the normalised item, per-item results, scores, the protocol.

The project's benchmark specification (summarised in docs/evaluation.md) fixes the item form: one JSONL line per item ``{"id", "benchmark", "category", "question", "images": [paths relative to
the data folder], "options": {"A": ...} | null, "answer": "B" | "yes" | "3" | free text, "boxes":
[[x1,y1,x2,y2] pixels] | null, "width", "height", "source"?, "pair_id"?}``. Adapters turn a benchmark's
published files into these items; scoring, caching, prompts and reports are shared.

A benchmark is an object with ``name``, ``load(root, limit) -> list[Item]`` (``root`` a local folder
holding the published files), ``prompt(item) -> str`` (the question text the model gets; the SIF
instruction is added by :mod:`sifthinker.method.prompts`) and ``score(items, responses, scoring) ->
BenchmarkScore``. Scoring is ``strict`` (the project's default) or ``original`` (defects E1-E6 of the
method spec, for comparison); the result says which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Benchmark", "BenchmarkScore", "Item", "ItemResult", "Scoring", "read_items", "wilson", "write_items"]


class Scoring(StrEnum):
    STRICT = "strict"  # a missing or unparseable <answer> is wrong (and a format failure); options parsed strictly
    ORIGINAL = "original"  # the original SIFThinker scripts' lenient rules (E1-E6), for comparison


@dataclass
class Item:
    """One benchmark question in the normalised form (paths relative to the benchmark's data folder)."""

    id: str
    benchmark: str
    category: str
    question: str
    images: list[str]
    options: dict[str, str] | None = None
    answer: str | None = None
    boxes: list[list[float]] | None = None  # pixels, x1 y1 x2 y2
    width: int | None = None
    height: int | None = None
    source: str | None = None
    pair_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # benchmark-specific (e.g. OVDEval's label ids)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Item:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"item {d.get('id')!r}: unknown field(s) {unknown}")
        return cls(**d)


def read_items(path: str | Path) -> list[Item]:
    """Items from an ``items.jsonl`` file (the normalised form)."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(Item.from_json(json.loads(line)))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}:{n}: {e}") from e
    return out


def write_items(path: str | Path, items: Iterable[Item]) -> Path:
    p = Path(path)
    p.write_text("".join(json.dumps(i.to_json(), ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return p


@dataclass
class ItemResult:
    """How one item scored. ``correct`` None: the item was skipped (not in any denominator; ``note`` says
    why). ``format_failure``: the response had no parseable ``<answer>`` (or area, for grounding)."""

    id: str
    category: str
    correct: bool | None
    format_failure: bool
    parsed: str | None = None  # what was read from the response: the answer text, the option, the box
    iou: float | None = None  # grounding benchmarks
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchmarkScore:
    """A benchmark's scores: flat ``metrics`` (``overall``, ``n``, ``format_failures``, ``skipped``,
    ``category/<name>``, and the benchmark's own keys such as ``AP``, ``AP50``), Wilson 95% intervals
    for the accuracies, the per-item results, and the scoring mode that produced them."""

    benchmark: str
    scoring: Scoring
    metrics: dict[str, float]
    items: list[ItemResult]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "3 multi-image items skipped (E5)"


class Benchmark(Protocol):
    name: str

    def load(self, root: Path, limit: int | None = None) -> list[Item]: ...

    def prompt(self, item: Item) -> str: ...

    def score(self, items: Sequence[Item], responses: Mapping[str, str], scoring: Scoring) -> BenchmarkScore: ...


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95% by default) for a proportion; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
