"""The embedded source: seeded synthetic 3D scenes with exact answers, boxes and depth (no download)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import numpy as np
from PIL import Image

from sifthinker.data.sources.base import Entry, SourceItem, SourceSpec
from sifthinker.scenes import CATEGORIES, derive_seed, generate_scene
from sifthinker.scenes.items import MAX_ATTEMPTS, _target
from sifthinker.scenes.questions import candidate_questions, pick


def synthetic_item(seed: int, i: int, width: int = 320, height: int = 240):
    """Item ``i`` of ``sifthinker.scenes.generate_items(n, seed)``, made on its own.

    Item i's category and answer-class target depend only on i, so a worker can make items i..j without
    the ones before them (tests/data/test_data_sources.py checks it against ``generate_items``).
    """
    cats = list(CATEGORIES)
    cat = cats[i % len(cats)]
    kind, target = _target(seed, cat, i // len(cats))
    attempt = 0
    while True:
        scene_seed = derive_seed(seed, i, attempt)
        scene = generate_scene(scene_seed, width, height)
        rng = np.random.default_rng([scene_seed & 0xFFFFFFFF, scene_seed >> 32, 1])
        relaxed = attempt >= MAX_ATTEMPTS
        q = pick(candidate_questions(scene, cat), rng, None if relaxed else target, None if relaxed else kind)
        if q is not None:
            return scene, q
        attempt += 1


class SyntheticSource:
    """Scenes from ``sifthinker.scenes``: an endless stream, item ``i`` of seed ``s`` always the same."""

    name = "synthetic"
    default_depth = "gt"

    def __init__(self, width: int = 320, height: int = 240, max_items: int = 1_000_000):
        self.width, self.height, self.max_items = width, height, max_items

    def spec(self, seed: int = 0) -> SourceSpec:
        return SourceSpec("synthetic", seed=seed, options=(("width", self.width), ("height", self.height)))

    def entries(self, seed: int) -> Iterator[Entry]:
        for i in count():
            if i >= self.max_items:
                return
            yield Entry(uid=f"synthetic-s{seed}-{i:06d}", index=i, raw=seed)

    def load(self, entry: Entry) -> SourceItem:
        scene, q = synthetic_item(int(entry.raw), entry.index, self.width, self.height)
        by_id = {o.id: o for o in scene.objects}
        return SourceItem(
            uid=entry.uid, image=Image.fromarray(scene.rgb), depth=scene.depth, question=q.question,
            answer=q.answer, answer_type=q.answer_type, category=q.category,
            gt_boxes_px=[tuple(float(v) for v in b) for b in q.boxes],
            evidence_names=[by_id[e].name for e in q.evidence], dataset="synthetic",
        )
