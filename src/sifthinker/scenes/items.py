"""Balanced streams of (scene, question) items."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .generate import derive_seed, generate_scene
from .model import Scene
from .questions import CATEGORIES, Question, candidate_questions, pick

# Per category, one block of (kind or None, answer class) targets; every block is used in a shuffled
# order, so answers are balanced within +-1 block. Existence: "anchored_absent" can only be "no", so
# the anchored family gets two "yes" for one "no, other side" and one "no, absent": 50/50 overall.
TARGETS: dict[str, list[tuple[str | None, str]]] = {
    "depth": [(None, "first"), (None, "second")],
    "position": [(None, c) for c in ("yes", "no", "first", "second", "left", "right", "above", "below")],
    "counting": [(None, str(n)) for n in (1, 2, 3, 4)],
    "existence": [
        ("existence/plain", "yes"),
        ("existence/plain", "no"),
        ("existence/plain", "yes"),
        ("existence/plain", "no"),
        ("existence/anchored", "yes"),
        ("existence/anchored", "no"),
        ("existence/anchored", "yes"),
        ("existence/anchored_absent", "no"),
    ],
    "size": [(None, "first"), (None, "second")],
    "attribute": [("attribute/color", "color"), ("attribute/shape", "name")],
}
MAX_ATTEMPTS = 200  # scenes tried for one item before the answer-class target is dropped


def _target(seed: int, category: str, k: int) -> tuple[str | None, str]:
    block = TARGETS[category]
    b, pos = divmod(k, len(block))
    order = np.random.default_rng([seed & 0xFFFFFFFF, CATEGORIES.index(category), b]).permutation(len(block))
    return block[int(order[pos])]


def generate_items(
    num: int,
    seed: int,
    width: int = 320,
    height: int = 240,
    categories: Iterable[str] | None = None,
) -> Iterator[tuple[Scene, Question]]:
    """Yield ``num`` (scene, question) pairs, deterministic for ``seed``.

    Item ``i`` has category ``categories[i % len(categories)]`` and an answer-class target drawn from a
    shuffled per-category block (see ``TARGETS``); scenes with seeds ``derive_seed(seed, i, attempt)``
    are tried until one has a question of that class (after ``MAX_ATTEMPTS`` scenes any class goes).
    """
    cats = list(categories) if categories is not None else list(CATEGORIES)
    if not cats:
        raise ValueError("no categories")
    for c in cats:
        if c not in CATEGORIES:
            raise ValueError(f"unknown category {c!r}; expected one of {CATEGORIES}")
    counters = dict.fromkeys(cats, 0)
    for i in range(num):
        cat = cats[i % len(cats)]
        kind, target = _target(seed, cat, counters[cat])
        counters[cat] += 1
        attempt = 0
        while True:
            scene_seed = derive_seed(seed, i, attempt)
            scene = generate_scene(scene_seed, width, height)
            rng = np.random.default_rng([scene_seed & 0xFFFFFFFF, scene_seed >> 32, 1])
            cands = candidate_questions(scene, cat)
            relaxed = attempt >= MAX_ATTEMPTS
            q = pick(cands, rng, None if relaxed else target, None if relaxed else kind)
            if q is not None:
                yield scene, q
                break
            attempt += 1
