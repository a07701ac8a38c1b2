"""The report's gallery: traces drawn on their images (:func:`sifthinker.method.visualize.save_trace_png`).

Items are picked round-robin over categories (first-seen order) so every category is shown. The depth
panel is drawn when the item has its own depth image; a depth provider is not run again for a picture.
Ground-truth boxes (pixels in the item form) are drawn in magenta. An item whose image cannot be read is
left out of the gallery (logged), since the report must not fail over a picture.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from sifthinker.evaluation.benchmarks.base import BenchmarkScore, Item
from sifthinker.evaluation.inputs import depth_paths
from sifthinker.method.geometry import Frame, to_norm
from sifthinker.method.visualize import save_trace_png

__all__ = ["render_gallery", "render_order"]

log = logging.getLogger(__name__)


def render_order(items: Sequence[Item], k: int) -> list[int]:
    """Indices of up to ``k`` items, round-robin over categories in first-seen order."""
    by_cat: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_cat.setdefault(it.category or "unknown", []).append(i)
    queues, picked = list(by_cat.values()), []
    while len(picked) < k and any(queues):
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop(0))
    return picked


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "item"


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def render_gallery(items: Sequence[Item], responses: Mapping[str, str], score: BenchmarkScore, root: Path,
                   out_dir: Path, k: int) -> list[tuple[Path, str]]:
    """Draw up to ``k`` answered items into ``out_dir`` (emptied of earlier renders); (PNG, caption) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):  # renders of an earlier run in the same folder
        stale.unlink()
    answered = [it for it in items if it.id in responses]
    results = {r.id: r for r in score.items}
    out: list[tuple[Path, str]] = []
    for i in render_order(answered, max(0, k)):
        it = answered[i]
        try:
            image = _open(root / it.images[0])
            own = depth_paths(it)
            depth = _open(root / own[0]) if own else None
        except (OSError, ValueError, IndexError) as e:
            log.warning("gallery: item %s left out: %s", it.id, e)
            continue
        w, h = it.width or image.width, it.height or image.height
        gt = [to_norm(tuple(b), Frame.PIXEL, w, h) for b in it.boxes or [] if len(b) == 4]
        r = results.get(it.id)
        verdict = "skipped" if r is None or r.correct is None else ("correct" if r.correct else "wrong")
        caption = f"{it.id} [{it.category}] {verdict}"
        title = f"{caption} | Q: {it.question} | GT: {it.answer}"
        path = out_dir / f"{len(out):04d}_{_safe(it.id)}.png"
        out.append((save_trace_png(image, responses[it.id], path, title, depth_image=depth, gt_boxes=gt or None),
                    caption))
    return out
