"""The held-out probe of the tiny base: can it point, and can it answer short questions about the image?

Grounding: "Where is the <colour> <shape>?" on scenes of one object, of 2-3 and of the data builder's
3-8 (the targets are on the last), greedy; the reply's first box against the object's visible-pixel box
gives the mean IoU and Acc@0.5 per group. Short answers: per kind (:data:`short_answer.KINDS`), the share
of replies equal to the answer. The scene seeds are small integers from ``PROBE_SEED`` on; the
pre-training's start at ``base_pretrain.TRAIN_SEED`` and stay below ``PROBE_SEED``, and the data
builder's scenes have 63-bit hashed seeds (``derive_seed``), so no probe scene is trained on and no eval
split scene is either.
"""

from __future__ import annotations

from typing import Any

from sifthinker.model.short_answer import KINDS

PROBE_SEED = 90_000_000  # as benchmarks/ground_probe.py's held-out scenes
# Grounding groups: name -> object counts drawn from (None: the builder's 3-8).
SCENE_GROUPS: dict[str, tuple[int | None, ...]] = {"1": (1,), "2-3": (2, 3), "3-8": (None,)}
GROUND_TOKENS = 64  # `the <name>: [{"bbox_2d":[...],"depth":...}]` is ~35-45 tokens
SHORT_TOKENS = 8


def first_box(reply: str) -> tuple[float, float, float, float] | None:
    """The first box of the reply's first area (the reply is ``the <name>: [{...}]``); None if unreadable."""
    from sifthinker.method.areas import read_areas

    body = reply.split(": ", 1)[-1]
    areas = read_areas(f"<area>{body}</area>")
    return areas[0][0].xyxy() if areas and areas[0] else None


def probe_items(n: int, width: int, height: int,
                only: tuple[str, ...] | None = None) -> dict[str, list[tuple[str, str, list[Any]]]]:
    """The held-out items: ``ground/<group>`` and ``short/<kind>`` -> ``n`` (question, target, images).

    ``only``: just these keys (e.g. ``("ground/1",)``); the items of a key do not depend on it."""
    from sifthinker.model.ground_pretrain import grounding_item
    from sifthinker.model.short_answer import short_item

    items: dict[str, list[tuple[str, str, list[Any]]]] = {}
    for g, (name, crowd) in enumerate(SCENE_GROUPS.items()):
        first = PROBE_SEED + g * 100_000
        if only is None or f"ground/{name}" in only:
            items[f"ground/{name}"] = [grounding_item(first + i, width, height, crowd=crowd) for i in range(n)]
    for k, kind in enumerate(sorted(KINDS)):
        first = PROBE_SEED + 1_000_000 + k * 100_000
        if only is None or f"short/{kind}" in only:
            items[f"short/{kind}"] = [short_item(first + i, width, height, kind)[:3] for i in range(n)]
    return items


def run_probe(model: Any, processor: Any, items: dict[str, list[tuple[str, str, list[Any]]]],
              batch_size: int = 20) -> dict[str, float]:
    """Greedy replies to ``items``; metrics ``ground/<group>/iou``, ``ground/<group>/acc50``,
    ``ground/<group>/named`` (replies that name the asked object and give a readable box),
    ``short/<kind>/acc`` and the means ``short/acc`` and ``ground/acc50`` (over groups)."""
    from sifthinker.method.geometry import box_iou
    from sifthinker.model.inference import GenRequest, generate

    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        for key, group in items.items():
            tokens = GROUND_TOKENS if key.startswith("ground/") else SHORT_TOKENS
            replies = generate(model, processor, [GenRequest(ims[0], ims[1], q) for q, _, ims in group], tokens,
                               batch_size=batch_size)
            if key.startswith("ground/"):
                ious, named = [], 0
                for reply, (_, target, _) in zip(replies, group, strict=True):
                    got, want = first_box(reply), first_box(target)
                    ious.append(box_iou(got, want) if got is not None and want is not None else 0.0)
                    # The object's name copied from the question, then a readable area: the format.
                    named += got is not None and reply.startswith(target.split(":")[0] + ":")
                metrics[f"{key}/iou"] = sum(ious) / len(ious)
                metrics[f"{key}/named"] = named / len(ious)
                metrics[f"{key}/acc50"] = sum(i >= 0.5 for i in ious) / len(ious)
            else:
                right = [r.strip().lower() == t.lower() for r, (_, t, _) in zip(replies, group, strict=True)]
                metrics[f"{key}/acc"] = sum(right) / len(right)
    finally:
        model.train(was_training)
    shorts = [v for k, v in metrics.items() if k.startswith("short/")]
    grounds = [v for k, v in metrics.items() if k.endswith("/acc50")]
    if shorts:
        metrics["short/acc"] = sum(shorts) / len(shorts)
    if grounds:
        metrics["ground/acc50"] = sum(grounds) / len(grounds)
    return metrics


def format_probe(step: int, metrics: dict[str, float]) -> str:
    """One progress line: grounding IoU/Acc@0.5 per group, short-answer accuracy per kind."""
    g = " ".join(f"{k.split('/')[1]}:{metrics[k + '/iou']:.2f}/{metrics[k + '/acc50']:.2f}"
                 for k in (f"ground/{n}" for n in SCENE_GROUPS) if k + "/iou" in metrics)
    s = " ".join(f"{kind}:{metrics[f'short/{kind}/acc']:.2f}" for kind in sorted(KINDS)
                 if f"short/{kind}/acc" in metrics)
    line = f"probe step {step}: ground IoU/Acc@0.5 {g} | short-answer {s}"
    if "image/gap" in metrics:  # sifthinker.model.image_use: 0 means the images are not used
        line += f" | image loss gap {metrics['image/gap']:.4f}, |vision| {metrics['image/vision_norm']:.1f}"
    return line
