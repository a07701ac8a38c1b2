"""Seeded scene sampling: camera, object vocabulary, non-overlapping placement, rendering."""

from __future__ import annotations

import math

import numpy as np

from .model import COLORS, MIN_VISIBLE_PIXELS, SHAPES, SIZES, WALL_Z, Camera, ObjectSpec, Scene
from .render import render_scene

Z_RANGE = (2.4, 10.0)  # camera-forward placement range of object centres (world z)
GAP = 0.08  # minimum clearance between footprints
MIN_OBJECTS, MAX_OBJECTS = 3, 8
_COLOR_NAMES = tuple(COLORS)
_SIZE_NAMES = tuple(SIZES)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (e.g. (seed, index, attempt)) via numpy's SeedSequence."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        height=float(rng.uniform(2.2, 3.0)),
        pitch=math.radians(float(rng.uniform(18.0, 28.0))),
        hfov=math.radians(60.0),
    )


def _in_view(spec: ObjectSpec, camera: Camera, aspect: float, margin: float = 0.01) -> bool:
    """Whether the object's bounding box projects fully inside the frame (resolution independent)."""
    uv = camera.project(spec.bounding_corners(), 1000, int(round(1000 / aspect)))
    h = 1000 / aspect
    if np.any(uv[:, 2] <= 0.1):
        return False
    return bool(
        uv[:, 0].min() >= margin * 1000
        and uv[:, 0].max() <= (1 - margin) * 1000
        and uv[:, 1].min() >= margin * h
        and uv[:, 1].max() <= (1 - margin) * h
    )


def _clear(spec: ObjectSpec, placed: list[ObjectSpec]) -> bool:
    for q in placed:
        if math.hypot(spec.x - q.x, spec.z - q.z) < spec.footprint_radius + q.footprint_radius + GAP:
            return False
    return spec.z + spec.footprint_radius < WALL_Z - GAP


def sample_specs(
    rng: np.random.Generator, camera: Camera, aspect: float, num_objects: int | None = None, tries: int = 60
) -> list[ObjectSpec]:
    """Sample distinct (color, shape) objects and place them without interpenetration.

    A scene draws its colours from a random subset of 2-5 colours so that several objects often share
    a colour (or a shape), which gives counting questions answers above 1. An object that cannot be
    placed after ``tries`` positions is dropped.
    """
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)) if num_objects is None else int(num_objects)
    k = int(rng.integers(2, 6))
    palette = rng.choice(len(_COLOR_NAMES), size=k, replace=False)
    if n > k * len(SHAPES):
        palette = np.arange(len(_COLOR_NAMES))
    combos = [(int(c), s) for c in palette for s in range(len(SHAPES))]
    n = min(n, len(combos))
    picks = rng.choice(len(combos), size=n, replace=False)
    tan_half = math.tan(camera.hfov / 2.0)
    placed: list[ObjectSpec] = []
    for p in picks:
        c, s = combos[int(p)]
        size = _SIZE_NAMES[int(rng.integers(len(_SIZE_NAMES)))]
        for _ in range(tries):
            z = float(rng.uniform(*Z_RANGE))
            x = float(rng.uniform(-1.0, 1.0)) * z * tan_half
            yaw = float(rng.uniform(0.0, math.pi / 2.0))
            spec = ObjectSpec(SHAPES[s], _COLOR_NAMES[c], size, x, z, yaw)
            if _clear(spec, placed) and _in_view(spec, camera, aspect):
                placed.append(spec)
                break
    return placed


def generate_scene(seed: int, width: int = 320, height: int = 240, num_objects: int | None = None) -> Scene:
    """Render the scene of ``seed``: deterministic, byte-identical for the same arguments.

    Objects left with fewer than ``MIN_VISIBLE_PIXELS`` visible pixels are removed and the scene is
    rendered again (removing an object only uncovers others), so every object of a generated scene is
    visible enough to be asked about and the metadata never names an object the image does not show.
    """
    rng = np.random.default_rng(int(seed))
    camera = sample_camera(rng)
    specs = sample_specs(rng, camera, width / height, num_objects)
    scene = render_scene(specs, camera, width, height, seed=int(seed))
    keep = [o.visible_pixels >= MIN_VISIBLE_PIXELS for o in scene.objects]
    if not all(keep):
        specs = [sp for sp, k in zip(specs, keep, strict=True) if k]
        scene = render_scene(specs, camera, width, height, seed=int(seed))
    return scene
