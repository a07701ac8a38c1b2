"""How the box and depth rewards read a completion's ``<area>`` tags (method spec, section 5, D4).

Every ``<area>`` is read in order, as written. One either parses, giving its boxes, or it does not
(``None``): its content must be a non-empty JSON list of objects (or one object) each holding a
``bbox_2d`` of 4 finite numbers. Nothing else is checked here (ranges, decimals, corner order, extra
keys are the format reward's job), and ``depth`` is optional: r_box needs boxes, not depths, and
r_depth counts a box without a numeric depth as inconsistent.

Kept apart from :func:`sifthinker.method.trace.extract_areas`, which drops unparseable areas and boxes without
a depth: the rewards must see where an area failed, so that r_box never falls back to an earlier one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["AreaBox", "read_areas"]

# The content may not contain another "<area>", so "<area><area>[...]</area>" reads the inner list.
_AREA_RE = re.compile(r"<area>((?:(?!<area>).)*?)</area>", re.DOTALL)


@dataclass(frozen=True)
class AreaBox:
    """A box as written in an area: per-axis normalised corners and the stated depth (None if missing)."""

    x1: float
    y1: float
    x2: float
    y2: float
    depth: float | None

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def is_full_image(self) -> bool:
        return self.xyxy() == (0.0, 0.0, 1.0, 1.0)

    def has_area(self) -> bool:
        """False for an inverted or zero-area box (D4: IoU 0, never depth-consistent)."""
        return self.x2 > self.x1 and self.y2 > self.y1


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    # float(v) rather than math.isfinite(v): a 400-digit JSON integer would overflow isfinite.
    x = float(v) if not isinstance(v, int) or abs(v) < 10**300 else math.inf
    return x if math.isfinite(x) else None


def _box(item: Any) -> AreaBox | None:
    if not isinstance(item, dict) or not isinstance(item.get("bbox_2d"), list) or len(item["bbox_2d"]) != 4:
        return None
    coords = [_number(v) for v in item["bbox_2d"]]
    if any(c is None for c in coords):
        return None
    return AreaBox(*coords, depth=_number(item.get("depth")))  # type: ignore[arg-type, misc]


def _parse(content: str) -> tuple[AreaBox, ...] | None:
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return None
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        return None
    boxes = [_box(item) for item in items]
    # One bad item fails the whole area: a partly read area would misstate which boxes the model chose.
    return None if any(b is None for b in boxes) else tuple(boxes)  # type: ignore[arg-type]


def read_areas(text: Any) -> list[tuple[AreaBox, ...] | None]:
    """Every ``<area>`` of ``text`` in order: its boxes, or None where it does not parse."""
    if not isinstance(text, str):
        return []
    return [_parse(m.group(1)) for m in _AREA_RE.finditer(text)]
