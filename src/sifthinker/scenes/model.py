"""Data model of the synthetic scenes: vocabulary, object specs, camera, rendered scene.

World frame: right-handed, metres-ish units, ``y`` up, the ground is the plane ``y = 0`` and a back
wall is the plane ``z = WALL_Z``. The camera sits at ``(0, camera.height, 0)`` looking along ``+z``,
pitched down by ``camera.pitch``. Pixel ``(col, row)`` covers ``[col, col+1] x [row, row+1]``; its ray
goes through the pixel centre. Camera-space ``z`` (distance along the optical axis) is the metric depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.13, 0.12),
    "green": (0.16, 0.68, 0.22),
    "blue": (0.16, 0.32, 0.92),
    "yellow": (0.97, 0.86, 0.14),
    "purple": (0.56, 0.22, 0.78),
    "orange": (1.00, 0.52, 0.08),
    "gray": (0.52, 0.52, 0.52),
}
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "pyramid")
SHAPE_PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
SIZES: dict[str, float] = {"small": 0.35, "large": 0.65}  # characteristic half-extent

WALL_Z = 12.0
MIN_VISIBLE_PIXELS = 30  # objects with fewer visible pixels never appear in questions

# Per-shape dimensions as multiples of the size's half-extent s: (footprint radius, height).
# The footprint radius bounds the object in the ground plane for any yaw.
_SHAPE_DIMS: dict[str, tuple[float, float]] = {
    "cube": (math.sqrt(2.0), 2.0),  # half edge s
    "sphere": (1.0, 2.0),  # radius s
    "cylinder": (0.9, 2.0),  # radius 0.9 s
    "cone": (1.0, 2.2),  # base radius s
    "pyramid": (math.sqrt(2.0), 2.0),  # half base s
}


@dataclass(frozen=True)
class ObjectSpec:
    """What to draw: a shape resting on the ground with its base centre at ``(x, 0, z)``."""

    shape: str
    color: str
    size: str
    x: float
    z: float
    yaw: float = 0.0  # rotation about the vertical axis (cube, pyramid), radians

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")

    @property
    def s(self) -> float:
        return SIZES[self.size]

    @property
    def footprint_radius(self) -> float:
        return _SHAPE_DIMS[self.shape][0] * self.s

    @property
    def object_height(self) -> float:
        return _SHAPE_DIMS[self.shape][1] * self.s

    @property
    def center(self) -> tuple[float, float, float]:
        return (self.x, self.object_height / 2.0, self.z)

    def bounding_corners(self) -> np.ndarray:
        """The 8 corners of a world axis-aligned box that contains the object, shape (8, 3)."""
        r, h = self.footprint_radius, self.object_height
        xs, ys, zs = (self.x - r, self.x + r), (0.0, h), (self.z - r, self.z + r)
        return np.array([(x, y, z) for x in xs for y in ys for z in zs], dtype=np.float64)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at ``(0, height, 0)`` looking along ``+z``, pitched down by ``pitch`` radians."""

    height: float = 2.5
    pitch: float = math.radians(22.0)
    hfov: float = math.radians(60.0)

    @property
    def origin(self) -> np.ndarray:
        return np.array([0.0, self.height, 0.0])

    def basis(self) -> np.ndarray:
        """3x3 matrix whose columns are the camera's right, up and forward axes in world coordinates."""
        sp, cp = math.sin(self.pitch), math.cos(self.pitch)
        return np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])

    def focal(self, width: int) -> float:
        return (width / 2.0) / math.tan(self.hfov / 2.0)

    def ray_axes(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Separable ray directions: world x per column (W,), world y and z per row (H,).

        The camera has no roll or yaw, so the ray through pixel (col, row) is
        ``(dx[col], dy[row], dz[row])``, scaled so that its camera-space z is 1 (``t`` = metric depth).
        """
        f = self.focal(width)
        xc = (np.arange(width, dtype=np.float64) + 0.5 - width / 2.0) / f
        yc = -(np.arange(height, dtype=np.float64) + 0.5 - height / 2.0) / f
        sp, cp = math.sin(self.pitch), math.cos(self.pitch)
        return xc, yc * cp - sp, yc * sp + cp

    def rays(self, width: int, height: int) -> np.ndarray:
        """World ray directions through pixel centres, (H, W, 3), scaled to camera-space z = 1."""
        dx, dy, dz = self.ray_axes(width, height)
        d = np.empty((height, width, 3))
        d[..., 0] = dx[None, :]
        d[..., 1] = dy[:, None]
        d[..., 2] = dz[:, None]
        return d

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3) (x right, y up, z forward)."""
        return (np.asarray(points, dtype=np.float64) - self.origin) @ self.basis()

    def project(self, points: np.ndarray, width: int, height: int) -> np.ndarray:
        """World points (N, 3) -> (N, 3) array of (u, v, camera z) in pixels (v downwards)."""
        pc = self.to_camera(points)
        f = self.focal(width)
        z = pc[:, 2]
        u = f * pc[:, 0] / z + width / 2.0
        v = -f * pc[:, 1] / z + height / 2.0
        return np.stack([u, v, z], axis=1)


Box = tuple[float, float, float, float]


@dataclass
class SceneObject:
    """One rendered object. ``box`` is the pixel box of its *visible* pixels (None if fully hidden)."""

    id: int
    shape: str
    color: str
    size: str
    position: tuple[float, float, float]  # world centre of its bounding box (y = half its height)
    box: Box | None
    visible_fraction: float  # visible pixels / pixels it would cover alone (in frame)
    mean_depth: float  # mean relative depth over its visible pixels (nan if fully hidden)
    visible_pixels: int = 0
    projected_pixels: int = 0  # pixels it covers when rendered alone (its apparent size)
    camera_z: float = 0.0  # camera-space z of its centre
    yaw: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def spec(self) -> ObjectSpec:
        return ObjectSpec(self.shape, self.color, self.size, self.position[0], self.position[2], self.yaw)


@dataclass
class Scene:
    """A rendered scene. ``depth`` is relative (per-image min-max of ``metric_depth``; 0 near, 1 far)."""

    seed: int
    width: int
    height: int
    rgb: np.ndarray  # uint8 (H, W, 3)
    depth: np.ndarray  # float32 (H, W) in [0, 1]
    metric_depth: np.ndarray  # float32 (H, W), camera-space z
    objects: list[SceneObject]
    ids: np.ndarray = field(repr=False, default=None)  # int16 (H, W): object id, -1 background
    camera: Camera = field(default_factory=Camera)

    def object(self, object_id: int) -> SceneObject:
        for o in self.objects:
            if o.id == object_id:
                return o
        raise KeyError(object_id)

    def by_name(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def eligible_objects(self) -> list[SceneObject]:
        """Objects that questions may mention (at least ``MIN_VISIBLE_PIXELS`` visible pixels)."""
        return [o for o in self.objects if o.visible_pixels >= MIN_VISIBLE_PIXELS]


CATEGORIES: tuple[str, ...] = ("depth", "position", "counting", "existence", "size", "attribute")
ANSWER_TYPES: tuple[str, ...] = ("yes_no", "option", "number", "color", "name")


@dataclass
class Question:
    """A question about a scene; ``evidence`` are object ids and ``boxes`` their visible pixel boxes."""

    category: str
    question: str
    answer: str
    answer_type: str
    evidence: list[int]
    boxes: list[Box]
    options: list[str] = field(default_factory=list)
    kind: str = ""

    def to_dict(self) -> dict:
        return {
            "category": self.category,
            "question": self.question,
            "answer": self.answer,
            "answer_type": self.answer_type,
            "evidence": list(self.evidence),
            "boxes": [list(b) for b in self.boxes],
            "options": list(self.options),
            "kind": self.kind,
        }
