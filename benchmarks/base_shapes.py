"""Cost of the tiny base's candidate shapes: parameters, fp16 size and seconds per pre-training step.

Usage: PYTHONPATH=src python benchmarks/base_shapes.py [--steps 10] [--recipe recipes/tiny-base.yaml]

For each shape below (the tiny model's width, layers, vision tower; image tokens via max_pixels) it builds
the random model (no copy pre-training) and times --steps steps of the base pre-training's batches
(`base_pretrain.step_items`, batch 8) on one thread, after one warm-up step. Results of 2026-12-07 are in
docs/benchmarks.md ("The shipped tiny base").
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per run
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.model.base_pretrain import step_items  # noqa: E402
from sifthinker.model.ground_pretrain import vlm_batch  # noqa: E402
from sifthinker.model.loading import load_model  # noqa: E402
from sifthinker.model.pretrain import optimizer_step  # noqa: E402
from sifthinker.model.tiny import build_tiny_model  # noqa: E402

SHAPES = {  # name: (tiny fields, max_pixels)
    "h128-L3-v32x1-48tok": ({"hidden_size": 128, "intermediate_size": 256, "num_layers": 3}, 37632),
    "h128-L3-v32x1-12tok": ({"hidden_size": 128, "intermediate_size": 256, "num_layers": 3}, 12544),
    "h128-L3-v64x2-48tok": ({"hidden_size": 128, "intermediate_size": 256, "num_layers": 3,
                             "vision_hidden_size": 64, "vision_depth": 2, "vision_heads": 4}, 37632),
    "h192-L4-v64x2-48tok": ({"hidden_size": 192, "intermediate_size": 512, "num_layers": 4, "num_heads": 6,
                             "vision_hidden_size": 64, "vision_depth": 2, "vision_heads": 4}, 37632),
    "h256-L4-v64x2-48tok": ({"hidden_size": 256, "intermediate_size": 512, "num_layers": 4, "num_heads": 8,
                             "vision_hidden_size": 64, "vision_depth": 2, "vision_heads": 4}, 37632),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/tiny-base.yaml")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    base = RunConfig.load(args.recipe)
    corpus = [f"{q} {a}" for s in range(1, 20) for q, a, _ in step_items(base, s)]
    print(f"{'shape':<22} {'params':>9} {'fp16 MB':>8} {'s/step':>7}")
    for name, (fields, max_pixels) in SHAPES.items():
        cfg = copy.deepcopy(base)
        cfg.model.max_pixels = max_pixels
        cfg.model.tiny.pretrain_steps = 0
        for k, v in fields.items():
            setattr(cfg.model.tiny, k, v)
        with tempfile.TemporaryDirectory() as tmp:
            build_tiny_model(cfg, Path(tmp), corpus)
            model, proc = load_model(tmp, cfg, for_training=True)
        n = sum(p.numel() for p in model.parameters())
        step = optimizer_step(model, 2e-3, 10, 1000)
        step(model(**vlm_batch(proc, step_items(cfg, 1))).loss)  # warm-up
        t0 = time.monotonic()
        for s in range(2, args.steps + 2):
            step(model(**vlm_batch(proc, step_items(cfg, s))).loss)
        print(f"{name:<22} {n:>9} {2 * n / 1e6:>8.1f} {(time.monotonic() - t0) / args.steps:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
