"""Public question API: sampling questions about a scene, balanced by answer class.

The templates and the exact rules behind every answer live in :mod:`.templates` (see its docstring,
including the design of existence questions whose answer is "no").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .model import ANSWER_TYPES, CATEGORIES, Question, Scene
from .templates import GENERATORS

__all__ = [
    "ANSWER_TYPES",
    "CATEGORIES",
    "Question",
    "answer_class",
    "candidate_questions",
    "pick",
    "questions_for",
]

_RELATION_WORDS = ("left", "right", "above", "below")


def answer_class(q: Question) -> str:
    """The answer's balance class: yes/no, a number, a relation word, or which option (first/second).

    Attribute questions are balanced by what is asked (``color`` or ``name``), their answers spread by
    themselves over the vocabulary.
    """
    if q.category == "attribute":
        return q.answer_type
    if q.answer_type == "option" and q.answer not in _RELATION_WORDS:
        return "first" if q.answer == q.options[0] else "second"
    return q.answer


def candidate_questions(scene: Scene, category: str) -> list[Question]:
    """Every valid question of ``category`` for the scene, in a deterministic order."""
    if category not in GENERATORS:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    return GENERATORS[category](scene)


def pick(
    candidates: list[Question], rng: np.random.Generator, target: str | None = None, kind: str | None = None
) -> Question | None:
    """One candidate of answer class ``target`` and ``kind`` (if given): a uniform kind, then uniform."""
    if target is not None:
        candidates = [q for q in candidates if answer_class(q) == target]
    if kind is not None:
        candidates = [q for q in candidates if q.kind == kind]
    if not candidates:
        return None
    kinds = sorted({q.kind for q in candidates})
    kind = kinds[int(rng.integers(len(kinds)))]
    pool = [q for q in candidates if q.kind == kind]
    return pool[int(rng.integers(len(pool)))]


def questions_for(
    scene: Scene,
    rng: np.random.Generator,
    categories: Iterable[str] | None = None,
    per_category: int | None = 1,
) -> list[Question]:
    """Questions about ``scene``: ``per_category`` sampled per category (``None``: all candidates)."""
    out: list[Question] = []
    for cat in categories or CATEGORIES:
        cands = candidate_questions(scene, cat)
        if per_category is None:
            out += cands
            continue
        for _ in range(min(per_category, len(cands))):
            q = pick(cands, rng)
            cands = [c for c in cands if c is not q]
            out.append(q)
    return out
