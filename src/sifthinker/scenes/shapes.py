"""Vectorised ray intersection with the scene's convex shapes.

Every intersector takes the ray origin ``o`` (3,) and the ray direction components ``dx, dy, dz``
(arrays that broadcast to a common shape S, e.g. a row vector of column directions and column vectors
of row directions; not necessarily unit length) and returns ``(t, normal)``: the ray parameter of the
first hit, shape S (``inf`` where the ray misses), and the unit outward normal there, shape S + (3,).
The camera is always outside the objects and above the ground, so the first hit in front of the camera
is the visible surface. Bottom faces lie on the ground and are never visible from above, so they are
not intersected.
"""

from __future__ import annotations

import math

import numpy as np

from .model import ObjectSpec

_UP = np.array([0.0, 1.0, 0.0])


def _convex_polyhedron(o, dx, dy, dz, normals: np.ndarray, offsets: np.ndarray):
    """Intersect rays with {p : normals @ p <= offsets} by half-space clipping.

    The camera lies outside the "front" planes (normal . o > offset): a ray can only enter through
    them, and must point against each of them to hit; every other plane can only be an exit.
    """
    shape = np.broadcast_shapes(np.shape(dx), np.shape(dy), np.shape(dz))
    num = offsets - normals @ o  # ray satisfies plane j where (n_j . d) t <= num_j
    front = np.flatnonzero(num < 0)
    t_in = np.full(shape, -np.inf)
    t_out = np.full(shape, np.inf)
    k = np.full(shape, front[0] if front.size else 0, dtype=np.intp)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, n in enumerate(normals):
            nd = dx * n[0] + dy * n[1] + dz * n[2]
            if num[j] < 0:
                tj = np.where(nd < 0, num[j] / nd, np.inf)
                if j == front[0]:
                    t_in = tj
                else:
                    k = np.where(tj > t_in, j, k)
                    t_in = np.maximum(t_in, tj)
            else:
                t_out = np.minimum(t_out, np.where(nd > 0, num[j] / nd, np.inf))
    hit = (t_in <= t_out) & np.isfinite(t_in) & (t_in > 0)
    return np.where(hit, t_in, np.inf), normals[k]


def _yaw_axes(yaw: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c, 0.0, s]), np.array([-s, 0.0, c])


def cube_planes(spec: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    s = spec.s
    a1, a3 = _yaw_axes(spec.yaw)
    c = np.array([spec.x, 0.0, spec.z])
    normals = np.stack([a1, -a1, a3, -a3, _UP, -_UP])
    offsets = np.array([s + a1 @ c, s - a1 @ c, s + a3 @ c, s - a3 @ c, 2.0 * s, 0.0])
    return normals, offsets


def pyramid_planes(spec: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    s, h = spec.s, spec.object_height
    a1, a3 = _yaw_axes(spec.yaw)
    c = np.array([spec.x, 0.0, spec.z])
    sides = [h * a + s * _UP for a in (a1, -a1, a3, -a3)]  # h (a . q) + s y <= h s, with q = p - c
    normals = np.stack([*sides, -_UP])
    offsets = np.array([h * s + n @ c for n in sides] + [0.0])
    norm = np.linalg.norm(normals, axis=1)
    return normals / norm[:, None], offsets / norm


def intersect_cube(spec, o, dx, dy, dz):
    return _convex_polyhedron(o, dx, dy, dz, *cube_planes(spec))


def intersect_pyramid(spec, o, dx, dy, dz):
    return _convex_polyhedron(o, dx, dy, dz, *pyramid_planes(spec))


def intersect_sphere(spec, o, dx, dy, dz):
    r = spec.s
    c = np.array([spec.x, r, spec.z])
    ox, oy, oz = o - c
    a = dx * dx + dy * dy + dz * dz
    b = dx * ox + dy * oy + dz * oz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - r * r)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    hit = (disc >= 0) & (t > 0)
    t = np.where(hit, t, np.inf)
    tf = np.where(hit, t, 0.0)
    normal = np.stack(np.broadcast_arrays(ox + tf * dx, oy + tf * dy, oz + tf * dz), axis=-1) / r
    return t, normal


def intersect_cylinder(spec, o, dx, dy, dz):
    r, h = 0.9 * spec.s, spec.object_height
    ox, oz = o[0] - spec.x, o[2] - spec.z
    a = dx * dx + dz * dz
    b = dx * ox + dz * oz
    disc = b * b - a * (ox * ox + oz * oz - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / a
        ys = o[1] + ts * dy
        side = (disc >= 0) & (ts > 0) & (ys >= 0) & (ys <= h)
        tt = (h - o[1]) / dy
        px, pz = ox + tt * dx, oz + tt * dz
        top = (dy < 0) & (tt > 0) & (px * px + pz * pz <= r * r)
    ts = np.where(side, ts, np.inf)
    tt = np.where(top, tt, np.inf)
    t = np.minimum(ts, tt)
    use_side = ts <= tt
    tsf = np.where(side, ts, 0.0)
    nx = np.where(use_side, (ox + tsf * dx) / r, 0.0)
    nz = np.where(use_side, (oz + tsf * dz) / r, 0.0)
    ny = np.where(use_side, 0.0, 1.0)
    return t, np.stack(np.broadcast_arrays(nx, ny, nz), axis=-1)


def intersect_cone(spec, o, dx, dy, dz):
    r, h = spec.s, spec.object_height
    k2 = (r / h) ** 2
    ox, oz = o[0] - spec.x, o[2] - spec.z
    w0 = h - o[1]  # (h - y) at t = 0
    # f(t) = (ox + t dx)^2 + (oz + t dz)^2 - k2 (w0 - t dy)^2 = a t^2 + 2 b t + c
    a = dx * dx + dz * dz - k2 * dy * dy
    b = dx * ox + dz * oz + k2 * w0 * dy
    disc = b * b - a * (ox * ox + oz * oz - k2 * w0 * w0)
    best = np.full(np.shape(disc), np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.sqrt(disc)
        for t in ((-b - sq) / a, (-b + sq) / a):
            y = o[1] + t * dy
            ok = (disc >= 0) & (t > 0) & (y >= 0) & (y <= h) & (t < best)
            best = np.where(ok, t, best)
    tf = np.where(np.isfinite(best), best, 0.0)
    n = np.stack(np.broadcast_arrays(ox + tf * dx, k2 * (w0 - tf * dy), oz + tf * dz), axis=-1)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return best, n / np.where(norm > 0, norm, 1.0)


_INTERSECTORS = {
    "cube": intersect_cube,
    "sphere": intersect_sphere,
    "cylinder": intersect_cylinder,
    "cone": intersect_cone,
    "pyramid": intersect_pyramid,
}


def intersect(spec: ObjectSpec, o: np.ndarray, dx, dy, dz) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays ``o + t (dx, dy, dz)`` with the object: ``(t, unit normal)``; ``inf`` = miss."""
    return _INTERSECTORS[spec.shape](spec, np.asarray(o, dtype=np.float64), dx, dy, dz)


def hull_points(spec: ObjectSpec) -> np.ndarray:
    """World points whose convex hull contains the object (tight for cubes and pyramids), (M, 3)."""
    if spec.shape in ("cube", "pyramid"):
        s, h = spec.s, spec.object_height
        a1, a3 = _yaw_axes(spec.yaw)
        c = np.array([spec.x, 0.0, spec.z])
        base = [c + i * s * a1 + j * s * a3 for i in (-1, 1) for j in (-1, 1)]
        top = [b + h * _UP for b in base] if spec.shape == "cube" else [c + h * _UP]
        return np.array(base + top)
    return spec.bounding_corners()
