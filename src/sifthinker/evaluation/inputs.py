"""What a generator gets for one benchmark item, and what it may answer besides a text.

:class:`EvalRequest`: the item, the question text the benchmark asks (``benchmark.prompt(item)``; the
SIF instruction is added by :mod:`sifthinker.method.prompts`), the data folder its paths are relative to, and
its images, loaded on demand: the RGB images (``item.images``), then one colour depth image per RGB
image, from ``item.extra["depth_image"]`` when the adapter has exact ones (SIF-Bench), else from the
depth provider. Fake generators never load images, so they cost nothing.

A generator answers each request with a text, or an :class:`ItemError`: ``transient=False`` when the
model or endpoint cannot take the item (a 4xx, too many images); it is recorded and the item is skipped
in scoring, with the reason. ``transient=True`` when retries ran out (5xx, timeouts); it is not cached,
and the run fails saying so, since a rerun may well succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sifthinker.evaluation.benchmarks.base import Item

__all__ = ["EvalRequest", "GenerateFn", "ItemError", "Outcome", "depth_paths"]


@dataclass(frozen=True)
class ItemError:
    """An item the generator did not answer (module docstring)."""

    reason: str
    transient: bool = False


Outcome = str | ItemError


def depth_paths(item: Item) -> list[str] | None:
    """The item's own depth images (``extra["depth_image"]``: one path, or one per RGB image); None
    when the adapter has none and the depth provider makes them."""
    raw = item.extra.get("depth_image") if item.extra else None
    if raw is None:
        return None
    paths = [raw] if isinstance(raw, str) else list(raw)
    if len(paths) != len(item.images) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(f"item {item.id!r}: extra.depth_image must give one path per RGB image "
                         f"({len(item.images)}), got {raw!r}")
    return paths


def _open_rgb(root: Path, rel: str, item_id: str) -> Image.Image:
    path = root / rel
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise OSError(f"item {item_id!r}: cannot read image {path}: {e}") from e


@dataclass
class EvalRequest:
    """One item to answer (module docstring). ``index``: the item's position in the benchmark run."""

    item: Item
    question: str
    root: Path
    index: int = 0
    depth_provider: Callable[[Image.Image], Image.Image] | None = field(default=None, repr=False)

    @property
    def n_images(self) -> int:
        return len(self.item.images)

    def rgb_images(self) -> list[Image.Image]:
        if not self.item.images:
            raise ValueError(f"item {self.item.id!r} has no images")
        return [_open_rgb(self.root, p, self.item.id) for p in self.item.images]

    def images(self) -> tuple[list[Image.Image], list[Image.Image]]:
        """(RGB images, their colour depth images), in the same order."""
        rgb = self.rgb_images()
        own = depth_paths(self.item)
        if own is not None:
            return rgb, [_open_rgb(self.root, p, self.item.id) for p in own]
        if self.depth_provider is None:
            raise ValueError(f"item {self.item.id!r} has no depth image and no depth provider was given")
        return rgb, [self.depth_provider(im) for im in rgb]

    def gen_request(self) -> Any:
        """The :class:`sifthinker.model.inference.GenRequest` of this item."""
        from sifthinker.model.inference import GenRequest

        rgb, depth = self.images()
        return GenRequest(rgb[0], depth[0], self.question, tuple(rgb[1:]), tuple(depth[1:]))


# The generation seam: one outcome per request, in order. A generator object may also carry ``name``,
# ``fingerprint`` (what its answers depend on; the prediction cache keys on it), ``batch_size`` (requests
# per call) and ``max_images`` (RGB images per item it can take; more are skipped with that reason).
GenerateFn = Callable[[Sequence[EvalRequest]], Sequence[Outcome]]
