"""Can the tiny model learn to point? Grounding pre-training with held-out box IoU along the way.

Usage: PYTHONPATH=src python benchmarks/ground_probe.py [--recipe recipes/local-skill.yaml] [--steps 1200]
       [--alone-steps 0] [--every 300] [--eval-items 60] [--eval-alone] [--work /tmp/ground-probe]

Builds the recipe's tiny base (random weights, then its copy pre-training; no grounding pre-training) on a
corpus of grounding examples, then runs the library's `grounding_pretrain` (the builder's own
`model.tiny.ground_steps` stage) for --steps, with the vision tower trained. Every --every steps it asks
held-out scenes "Where is the <object>?" greedily and prints the mean IoU of the box read from the reply
against the object's box, Acc@0.5, and the share of replies that name the object. --alone-steps: the
first steps show one object per scene; --eval-alone: held-out scenes of one object (else the mixed
crowds). The results of 2026-12-02 are in docs/benchmarks.md ("Reading a box off the image").
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per run
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.method.areas import read_areas  # noqa: E402
from sifthinker.method.geometry import box_iou  # noqa: E402
from sifthinker.model import GenRequest, generate, load_model  # noqa: E402
from sifthinker.model.ground_pretrain import grounding_item, grounding_pretrain  # noqa: E402
from sifthinker.model.tiny import build_tiny_model  # noqa: E402

EVAL_SEED = 90_000_000  # held-out scenes, far from the pre-training's


def first_box(reply: str) -> tuple[float, float, float, float] | None:
    """The first box of the reply's first area (the reply is `the <name>: [{...}]`)."""
    body = reply.split(": ", 1)[-1]
    areas = read_areas(f"<area>{body}</area>")
    return areas[0][0].xyxy() if areas and areas[0] else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/local-skill.yaml")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--alone-steps", type=int, default=0)
    ap.add_argument("--every", type=int, default=300)
    ap.add_argument("--eval-items", type=int, default=60)
    ap.add_argument("--eval-alone", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ground-probe"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cfg = RunConfig.load(args.recipe)
    cfg.model.tiny.ground_steps = 0
    cfg.model.freeze_vision = False  # the tower trains in pre-training, as in the builder
    w, h = cfg.data.width, cfg.data.height
    corpus = [" ".join(grounding_item(s, w, h)[:2]) for s in range(2000)]
    base = build_tiny_model(cfg, args.work / "base", corpus)
    model, proc = load_model(base, cfg, for_training=True)
    held_out = [grounding_item(EVAL_SEED + i, w, h, args.eval_alone) for i in range(args.eval_items)]
    rows: list[tuple[int, float, float, float, float]] = []
    t0 = time.monotonic()

    def evaluate(step: int) -> None:
        if step % args.every and step != args.steps:
            return
        model.eval()
        replies = generate(model, proc, [GenRequest(im[0], im[1], q) for q, _, im in held_out], 60, batch_size=20)
        model.train()
        ious, named = [], 0
        for reply, (_, target, _) in zip(replies, held_out, strict=True):
            got, want = first_box(reply), first_box(target)
            ious.append(box_iou(got, want) if got is not None else 0.0)
            named += reply.startswith(target.split(":")[0] + ":")
        n = len(ious)
        rows.append((step, sum(ious) / n, sum(i >= 0.5 for i in ious) / n, named / n, time.monotonic() - t0))

    grounding_pretrain(model, proc, args.steps, w, h, log_every=min(50, args.every), alone_steps=args.alone_steps,
                       on_log=evaluate)
    crowd = "one object" if args.eval_alone else "mixed crowds"
    print(f"\nheld-out: {args.eval_items} scenes ({crowd}); recipe {args.recipe}; alone steps {args.alone_steps}")
    print(f"{'step':>6} {'mean IoU':>9} {'Acc@0.5':>8} {'named':>6} {'wall s':>7}")
    for step, m, acc, named, wall in rows:
        print(f"{step:>6} {m:>9.3f} {acc:>8.3f} {named:>6.2f} {wall:>7.0f}")


if __name__ == "__main__":
    main()
