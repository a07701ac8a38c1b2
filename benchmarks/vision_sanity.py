"""Can a tiny model of the base's shape read anything off its images? The simplest visual question.

Usage: PYTHONPATH=src python benchmarks/vision_sanity.py --work DIR [--steps 400] [--every 100]
       [--vision-lr-scale 1.0] [--lr 2e-3] [--rope-theta R] [--images rgb|both] [--recipe recipes/tiny-base.yaml]

One object per scene, "What colour is the <shape>?" -> "<colour>" (8 colours: chance 0.125). A model whose
vision path works learns this in a few hundred steps; one that does not stays at the colour prior, with a
zero image gap. The recipe's tiny shape, no copy pre-training, batch 8, the pre-trainings' AdamW
(:func:`sifthinker.model.pretrain.make_optimizer`). Every --every steps: held-out greedy accuracy (40
items), the image gap (``image_use.image_reliance``) and the tower's output norm. Prints a table and writes
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

SEED0, HELD_OUT = 70_000_000, 79_000_000  # scene seeds of training items and of held-out ones


def colour_item(seed: int, width: int, height: int, both: bool) -> tuple[str, str, list]:
    from PIL import Image

    from sifthinker.method.depth import colorize
    from sifthinker.scenes import generate_scene

    scene = generate_scene(seed, width, height, num_objects=1)
    (obj,) = scene.objects
    images = [Image.fromarray(scene.rgb), colorize(scene.depth) if both else Image.fromarray(scene.rgb)]
    return f"What colour is the {obj.shape}?", obj.color, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/tiny-base.yaml")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vision-lr-scale", type=float, default=1.0)
    ap.add_argument("--rope-theta", type=float, default=None)
    ap.add_argument("--images", choices=("rgb", "both"), default="both",
                    help="both: RGB + the colour depth image, as the method's prompts; rgb: the RGB twice")
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from sifthinker.config.run_config import RunConfig
    from sifthinker.model.ground_pretrain import vlm_batch
    from sifthinker.model.image_use import image_feature_norm, image_reliance
    from sifthinker.model.inference import GenRequest, generate
    from sifthinker.model.loading import load_model
    from sifthinker.model.pretrain import optimizer_step
    from sifthinker.model.tiny import build_tiny_model

    cfg = RunConfig.load(args.recipe)
    cfg.model.tiny.pretrain_steps, cfg.model.tiny.ground_steps = 0, 0
    if args.rope_theta:
        cfg.model.tiny.rope_theta = args.rope_theta
    cfg.model.freeze_vision = False
    w, h, both = cfg.data.width, cfg.data.height, args.images == "both"
    held = [colour_item(HELD_OUT + i, w, h, both) for i in range(40)]
    corpus = [f"{q} {a}" for q, a, _ in (colour_item(SEED0 + i, w, h, both) for i in range(200))]
    args.work.mkdir(parents=True, exist_ok=True)
    model, processor = load_model(build_tiny_model(cfg, args.work / "base", corpus), cfg)
    step_fn = optimizer_step(model, args.lr, 50, args.steps, vision_lr_scale=args.vision_lr_scale)
    torch.manual_seed(0)
    curve, t0 = [], time.monotonic()
    model.train()
    for step in range(1, args.steps + 1):
        items = [colour_item(SEED0 + (step - 1) * 8 + k, w, h, both) for k in range(8)]
        out = model(**vlm_batch(processor, items))
        step_fn(out.loss)
        if step % args.every == 0 or step == args.steps:
            model.eval()
            replies = generate(model, processor, [GenRequest(ims[0], ims[1], q) for q, _, ims in held], 6)
            acc = sum(r.strip().lower() == a for r, (_, a, _) in zip(replies, held, strict=True)) / len(held)
            with torch.no_grad():
                gap = image_reliance(model, processor, held[:8])["gap"]
                norm = image_feature_norm(model, processor, [held[0][2][0]])["vision"]
            model.train()
            row = {"step": step, "loss": round(out.loss.item(), 4), "acc": acc, "gap": round(gap, 4),
                   "vision_norm": round(norm, 2), "s": round(time.monotonic() - t0)}
            curve.append(row)
            logging.info("%s", row)
    (args.work / "curve.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                      "curve": curve}, indent=1))
    print("| step | loss | held-out accuracy | image gap | tower output norm |\n|---|---|---|---|---|")
    for r in curve:
        print(f"| {r['step']} | {r['loss']:.3f} | {r['acc']:.3f} | {r['gap']:+.4f} | {r['vision_norm']:.1f} |")


if __name__ == "__main__":
    main()
