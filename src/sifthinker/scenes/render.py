"""Z-buffer renderer: analytic ray casting, vectorised per object over its screen-space bounds."""

from __future__ import annotations

import math

import numpy as np

from .model import COLORS, WALL_Z, Camera, ObjectSpec, Scene, SceneObject
from .shapes import hull_points, intersect

LIGHT = np.array([-0.45, 0.85, -0.55]) / np.linalg.norm([-0.45, 0.85, -0.55])  # towards the light
AMBIENT = 0.42
GROUND_COLOR = np.array([0.80, 0.76, 0.68])
WALL_COLOR = np.array([0.72, 0.79, 0.86])


def screen_bounds(points: np.ndarray, camera: Camera, width: int, height: int):
    """Integer pixel window (c0, r0, c1, r1) covering the projection of ``points``, clipped; or None."""
    uv = camera.project(points, width, height)
    if np.any(uv[:, 2] <= 1e-6):
        return 0, 0, width, height
    c0 = max(0, math.floor(uv[:, 0].min()) - 1)
    r0 = max(0, math.floor(uv[:, 1].min()) - 1)
    c1 = min(width, math.ceil(uv[:, 0].max()) + 1)
    r1 = min(height, math.ceil(uv[:, 1].max()) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    return c0, r0, c1, r1


def _lambert(normals: np.ndarray) -> np.ndarray:
    return AMBIENT + (1.0 - AMBIENT) * np.clip(normals @ LIGHT, 0.0, None)


def _window_rays(dx, dy, dz, win):
    """Broadcastable ray components of a pixel window: (1, w), (h, 1), (h, 1)."""
    c0, r0, c1, r1 = win
    return dx[None, c0:c1], dy[r0:r1, None], dz[r0:r1, None]


def _ground_tint(specs, camera, o, gx, gz, is_ground, width, height) -> np.ndarray:
    """Per-pixel multiplier for the background: checkerboard on the ground and soft contact shadows."""
    cells = np.floor(gx * np.float32(0.8)).astype(np.int32)
    cells += np.floor(gz * 0.8).astype(np.int32)[:, None]
    cells &= 1
    tint = _CHECKER[cells]
    tint[~is_ground] = 1.0
    shift = -LIGHT[[0, 2]] / LIGHT[1]  # ground offset of a shadow per unit of height
    for sp in specs:
        r = sp.footprint_radius
        sx = sp.x + shift[0] * sp.object_height * 0.35
        sz = sp.z + shift[1] * sp.object_height * 0.35
        rr = 2.0 * r  # the shadow is < 0.3% at the window edge: no visible seam
        corners = np.array([(sx + a, 0.0, sz + b) for a in (-rr, rr) for b in (-rr, rr)])
        win = screen_bounds(corners, camera, width, height)
        if win is None:
            continue
        c0, r0, c1, r1 = win
        dist2 = (gx[r0:r1, c0:c1] - sx) ** 2 + ((gz[r0:r1] - sz) ** 2)[:, None]
        shade = 1.0 - 0.38 * np.exp(-dist2 / (0.8 * r * r))
        sub = tint[r0:r1, c0:c1]
        sub *= np.where(is_ground[r0:r1, None], shade, 1.0).astype(np.float32)
    return tint


_CHECKER = np.array([1.0, 0.93], dtype=np.float32)
_GROUND_RGB = (255.0 * GROUND_COLOR * (AMBIENT + (1 - AMBIENT) * max(LIGHT[1], 0.0))).astype(np.float32)
_WALL_RGB = (255.0 * WALL_COLOR * (AMBIENT + (1 - AMBIENT) * max(-LIGHT[2], 0.0))).astype(np.float32)
_COLORS255 = {k: (255.0 * np.asarray(v)).astype(np.float32) for k, v in COLORS.items()}


def render_scene(
    specs: list[ObjectSpec],
    camera: Camera | None = None,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
) -> Scene:
    """Render objects (ids = their index in ``specs``) with a z-buffer; compute boxes and depths."""
    camera = camera or Camera()
    dx, dy, dz = camera.ray_axes(width, height)
    if np.any(dz <= 0):
        raise ValueError("camera sees behind itself: reduce pitch or field of view")
    o = camera.origin
    # Background, per row: the ground plane y = 0 or the back wall z = WALL_Z, whichever is first.
    t_wall = (WALL_Z - o[2]) / dz
    t_ground = np.where(dy < 0, -o[1] / np.where(dy < 0, dy, -1.0), np.inf)
    is_ground = t_ground < t_wall
    t_row = np.where(is_ground, t_ground, t_wall)
    zbuf = np.repeat(t_row[:, None], width, axis=1)
    gx = np.float32(o[0]) + t_row[:, None].astype(np.float32) * dx[None, :].astype(np.float32)
    gz = o[2] + t_row * dz
    tint = _ground_tint(specs, camera, o, gx, gz, is_ground, width, height)
    row_rgb = np.where(is_ground[:, None], _GROUND_RGB[None, :], _WALL_RGB[None, :])
    rgbf = np.empty((height, width, 3), dtype=np.float32)  # 0..255
    for c in range(3):
        np.multiply(tint, row_rgb[:, c, None], out=rgbf[..., c])
    ids = np.full((height, width), -1, dtype=np.int16)

    windows, projected = [], []
    for i, sp in enumerate(specs):
        win = screen_bounds(hull_points(sp), camera, width, height)
        windows.append(win)
        if win is None:
            projected.append(0)
            continue
        c0, r0, c1, r1 = win
        t, n = intersect(sp, o, *_window_rays(dx, dy, dz, win))
        projected.append(int(np.isfinite(t).sum()))
        zsub = zbuf[r0:r1, c0:c1]
        wins = t < zsub
        if not wins.any():
            continue
        zsub[wins] = t[wins]
        ids[r0:r1, c0:c1][wins] = i
        shade = _lambert(n)[wins].astype(np.float32)
        rgbf[r0:r1, c0:c1][wins] = _COLORS255[sp.color][None, :] * shade[:, None]

    rgbf += 0.5  # every factor is within [0, 1], so this rounds without clipping
    rgb = rgbf.astype(np.uint8)
    metric = zbuf.astype(np.float32)
    zmin, zmax = metric.min(), metric.max()
    rel = metric - zmin
    rel /= max(zmax - zmin, np.float32(1e-12))  # exactly 0 at the nearest and 1 at the farthest pixel

    objects = []
    for i, sp in enumerate(specs):
        objects.append(_describe(i, sp, windows[i], projected[i], ids, rel, camera))
    return Scene(
        seed=int(seed),
        width=width,
        height=height,
        rgb=rgb,
        depth=rel,
        metric_depth=metric,
        objects=objects,
        ids=ids,
        camera=camera,
    )


def _describe(i, sp: ObjectSpec, win, projected: int, ids, rel, camera: Camera) -> SceneObject:
    box, mean_depth, visible = None, float("nan"), 0
    if win is not None:
        c0, r0, c1, r1 = win
        mask = ids[r0:r1, c0:c1] == i
        visible = int(mask.sum())
        if visible:
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            box = (
                float(c0 + cols[0]),
                float(r0 + rows[0]),
                float(c0 + cols[-1] + 1),
                float(r0 + rows[-1] + 1),
            )
            mean_depth = float(rel[r0:r1, c0:c1][mask].mean(dtype=np.float64))
    cz = float(camera.to_camera(np.array([sp.center]))[0, 2])
    return SceneObject(
        id=i,
        shape=sp.shape,
        color=sp.color,
        size=sp.size,
        position=tuple(float(v) for v in sp.center),
        box=box,
        visible_fraction=(visible / projected) if projected else 0.0,
        mean_depth=mean_depth,
        visible_pixels=visible,
        projected_pixels=projected,
        camera_z=cz,
        yaw=float(sp.yaw),
    )
