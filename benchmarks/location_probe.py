"""Digit tokens or location tokens? Grounding pre-training of the tiny base's shape, held-out IoU along the way.

Usage: PYTHONPATH=src python benchmarks/location_probe.py --work DIR [--location-tokens] [--steps 600]
       [--every 150] [--train alone|mixed] [--copy-steps N]
       [--vision-lr-scale 1.0] [--eval-items 40] [--recipe recipes/tiny-base.yaml] [--seed 0]

Builds the recipe's tiny model (its shape, its copy pre-training, a tokenizer trained on grounding texts;
with --location-tokens the coordinate grid added as tokens, :mod:`sifthinker.model.location_tokens`),
then runs the library's ``grounding_pretrain`` for --steps (--train alone: one object per scene, the
first thing to learn; mixed: a third 1, 2-3 and 3-8 objects). Every --every steps: the base probe's
grounding groups "1" and "3-8" (greedy, IoU and Acc@0.5), whether the loss depends on the images
(``image_use.image_reliance``) and the vision tower's output norm. Prints a table and writes
``DIR/curve.json``. Results: docs/benchmarks.md ("Why the tiny base did not point").
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per run
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.model.base_probe import PROBE_SEED, probe_items, run_probe  # noqa: E402
from sifthinker.model.ground_pretrain import grounding_item, grounding_pretrain  # noqa: E402
from sifthinker.model.image_use import image_feature_norm, image_reliance  # noqa: E402
from sifthinker.model.loading import load_model  # noqa: E402
from sifthinker.model.tiny import build_tiny_model  # noqa: E402

GROUPS = ("ground/1", "ground/3-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/tiny-base.yaml")
    ap.add_argument("--location-tokens", action="store_true")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=150)
    ap.add_argument("--train", choices=("alone", "mixed"), default="alone")
    ap.add_argument("--eval-items", type=int, default=40)
    ap.add_argument("--corpus-items", type=int, default=400)
    ap.add_argument("--copy-steps", type=int, default=None, help="copy pre-training steps (default: the recipe's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vision-lr-scale", type=float, default=1.0, help="tower and projector lr / the LM's")
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg = RunConfig.load(args.recipe)
    cfg.model.tiny.location_tokens = args.location_tokens
    cfg.model.tiny.pretrain_steps = cfg.pretrain.copy_init_steps if args.copy_steps is None else args.copy_steps
    cfg.model.tiny.ground_steps = 0
    cfg.model.tiny.seed = args.seed
    cfg.model.freeze_vision = False  # the tower trains in pre-training
    w, h = cfg.data.width, cfg.data.height
    base = args.work / "base"
    if not (base / "config.json").is_file():
        corpus = [" ".join(grounding_item(s, w, h)[:2]) for s in range(args.corpus_items)]
        build_tiny_model(cfg, base, corpus)
    model, proc = load_model(base, cfg, for_training=True)
    held_out = probe_items(args.eval_items, w, h, only=GROUPS)
    gap_items = [grounding_item(PROBE_SEED + 500_000 + i, w, h, crowd=(1,)) for i in range(8)]
    rows: list[dict[str, float]] = []
    t0 = time.monotonic()

    def evaluate(step: int) -> None:
        if step % args.every and step != args.steps:
            return
        m = run_probe(model, proc, held_out)
        m |= {f"image/{k}": v for k, v in image_reliance(model, proc, gap_items).items()}
        m |= {f"norm/{k}": v for k, v in image_feature_norm(model, proc, [gap_items[0][2][0]]).items()}
        rows.append({"step": step, "wall_s": time.monotonic() - t0, **m})
        model.train()
        logging.info("probe %s", json.dumps(rows[-1]))
        (args.work / "curve.json").write_text(json.dumps({"args": vars(args) | {"work": str(args.work)},
                                                          "rows": rows}, indent=1))

    grounding_pretrain(model, proc, args.steps, w, h, seed=args.seed, log_every=min(50, args.every),
                       alone_steps=args.steps if args.train == "alone" else 0, on_log=evaluate,
                       vision_lr_scale=args.vision_lr_scale)
    kind = ("location tokens" if args.location_tokens else "digit tokens") + f", vision lr x{args.vision_lr_scale}"
    print(f"\n{kind}; train {args.train}; {args.eval_items} held-out items per group; seed {args.seed}")
    print(f"{'step':>5} {'IoU 1':>6} {'Acc 1':>6} {'IoU 3-8':>8} {'Acc 3-8':>8} {'img gap':>8} {'|vis|':>7} {'wall':>6}")
    for r in rows:
        print(f"{r['step']:>5} {r['ground/1/iou']:>6.3f} {r['ground/1/acc50']:>6.3f} {r['ground/3-8/iou']:>8.3f} "
              f"{r['ground/3-8/acc50']:>8.3f} {r['image/gap']:>8.3f} {r['norm/vision']:>7.1f} {r['wall_s']:>6.0f}")


if __name__ == "__main__":
    main()
