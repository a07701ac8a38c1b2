"""Exact spatial relations between scene objects, with margins that make every answer unambiguous.

All relations are strict: when two objects are too close to call, both directions are False and no
question is asked about them.
"""

from __future__ import annotations

from .model import Scene, SceneObject

DEPTH_MARGIN = 0.05  # minimum gap in mean relative depth (of the [0, 1] range) for "closer"
DEPTH_RATIO = 1.05  # and minimum ratio of the centres' camera-space z
POSITION_GAP_FRAC = 0.01  # boxes must be separated by this fraction of the image size (>= 2 px)
SIZE_AREA_RATIO = 1.5  # apparent (projected) area ratio that must agree with the 3D size class
SIZE_MIN_VISIBLE_FRACTION = 0.5  # both objects of a size question must be at least this visible


def _gap(scene: Scene, horizontal: bool) -> float:
    return max(2.0, POSITION_GAP_FRAC * (scene.width if horizontal else scene.height))


def left_of(scene: Scene, a: SceneObject, b: SceneObject) -> bool:
    """The whole visible box of ``a`` lies left of the whole visible box of ``b``, with a gap."""
    return a.box is not None and b.box is not None and a.box[2] + _gap(scene, True) <= b.box[0]


def above(scene: Scene, a: SceneObject, b: SceneObject) -> bool:
    """In the image, the visible box of ``a`` lies entirely above that of ``b``, with a gap."""
    return a.box is not None and b.box is not None and a.box[3] + _gap(scene, False) <= b.box[1]


def closer(a: SceneObject, b: SceneObject) -> bool:
    """``a`` is nearer the camera than ``b`` by both mean visible depth and centre distance."""
    return a.mean_depth + DEPTH_MARGIN <= b.mean_depth and a.camera_z * DEPTH_RATIO <= b.camera_z


def larger(a: SceneObject, b: SceneObject) -> bool:
    """``a`` is larger than ``b`` in 3D size class and in apparent size, and both are mostly visible."""
    return (
        a.size == "large"
        and b.size == "small"
        and a.projected_pixels >= SIZE_AREA_RATIO * b.projected_pixels
        and min(a.visible_fraction, b.visible_fraction) >= SIZE_MIN_VISIBLE_FRACTION
    )
