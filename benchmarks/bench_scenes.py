"""Throughput of the synthetic scene generator on one core.

Usage: PYTHONPATH=src python benchmarks/bench_scenes.py [--scenes 200] [--items 120]

Prints, per resolution, scenes/s and ms/scene for ``generate_scene`` (sampling, rendering, metadata)
and items/s for ``generate_items`` (which may render several scenes per item to balance answers).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

from sifthinker.scenes import generate_items, generate_scene  # noqa: E402

RESOLUTIONS = ((320, 240), (640, 480))


def bench_scenes(width: int, height: int, n: int) -> float:
    generate_scene(10_000, width, height)  # warm-up
    t0 = time.perf_counter()
    for seed in range(n):
        generate_scene(seed, width, height)
    return time.perf_counter() - t0


def bench_items(width: int, height: int, n: int) -> float:
    t0 = time.perf_counter()
    for _ in generate_items(n, seed=0, width=width, height=height):
        pass
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=200, help="scenes per resolution")
    ap.add_argument("--items", type=int, default=120, help="generate_items items per resolution (0: skip)")
    args = ap.parse_args(argv)
    print(f"{'resolution':>10} | {'scenes/s':>8} | {'ms/scene':>8} | {'items/s':>7}")
    print(f"{'-' * 10}-+-{'-' * 8}-+-{'-' * 8}-+-{'-' * 7}")
    for w, h in RESOLUTIONS:
        dt = bench_scenes(w, h, args.scenes)
        items = f"{args.items / bench_items(w, h, args.items):7.1f}" if args.items else f"{'-':>7}"
        print(f"{f'{w}x{h}':>10} | {args.scenes / dt:8.1f} | {1000 * dt / args.scenes:8.2f} | {items}")


if __name__ == "__main__":
    main()
