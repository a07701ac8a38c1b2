"""Short-answer questions about a synthetic scene, for the tiny base's pre-training and probe.

A hub VLM arrives able to say what colour a thing is, how many there are, which of two is nearer; the
random tiny model does not (issue 9: colour and existence at or below chance after SFT). These items ask
the data builder's own question templates (:mod:`sifthinker.scenes.templates`, so the wording and the
answer rules are the SIF data's) and want the bare answer: ``red``, ``3``, ``yes``, ``blue cube``.
Scenes are the builder's (3-8 objects); the answer class (yes/no, first/second option, ...) is drawn
uniformly among those the scene offers, so a constant answer cannot score above chance.
"""

from __future__ import annotations

import random
from typing import Any

# Our kind -> the template kinds it draws from (one source of truth for the probe's table too).
KINDS: dict[str, tuple[str, ...]] = {
    "colour": ("attribute/color",),
    "shape": ("attribute/shape",),
    "count": ("counting/color", "counting/shape"),
    "existence": ("existence/plain",),
    "nearer": ("depth/closer",),
    "larger": ("size/larger",),
    "left": ("position/lr_which",),
}
_CATEGORY = {"colour": "attribute", "shape": "attribute", "count": "counting", "existence": "existence",
             "nearer": "depth", "larger": "size", "left": "position"}
# "Which is further to the right?" shares the lr_which kind; only the "left" wording is this kind's.
_LEFT = "further to the left"
MAX_SCENES = 50  # scenes tried for one item before giving up (a kind is found in a few on average)


def short_item(seed: int, width: int, height: int, kind: str | None = None) -> tuple[str, str, list[Any], str]:
    """One example for scene seeds from ``seed``: (question, answer, [RGB image, colour depth image], kind).

    ``kind``: one of :data:`KINDS` (None: drawn uniformly from ``seed``)."""
    from PIL import Image

    from sifthinker.method.depth import colorize
    from sifthinker.scenes import generate_scene
    from sifthinker.scenes.questions import answer_class, candidate_questions

    rng = random.Random(seed)
    if kind is None:
        kind = rng.choice(sorted(KINDS))
    if kind not in KINDS:
        raise ValueError(f"unknown short-answer kind {kind!r}; expected one of {sorted(KINDS)}")
    for attempt in range(MAX_SCENES):
        scene = generate_scene(seed * MAX_SCENES + attempt, width, height)
        cands = [q for q in candidate_questions(scene, _CATEGORY[kind]) if q.kind in KINDS[kind]
                 and (kind != "left" or _LEFT in q.question)]
        if not cands:
            continue
        cls = rng.choice(sorted({answer_class(q) for q in cands}))
        q = rng.choice([q for q in cands if answer_class(q) == cls])
        return q.question, q.answer, [Image.fromarray(scene.rgb), colorize(scene.depth)], kind
    raise RuntimeError(f"no {kind} question in {MAX_SCENES} scenes from seed {seed}")
