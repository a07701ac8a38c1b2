"""Grounding pre-training of the random tiny VLM: a stand-in for what a hub checkpoint's pre-training gives.

Qwen2.5-VL-7B arrives able to point: asked where an object is, it writes its box. The tiny model starts
from random weights, and its image tokens carry no absolute position (the vision tower has only relative
2D rotary position, and the patch embedding is a convolution without padding), so a box can only be read
through the language model's M-RoPE, relative to an anchor such as ``<|vision_start|>``. A small model
finds that circuit for a lone object after 600-1200 steps of a task made only of it, and not within the
SFT budget when a box is a few of a trace's ~300 tokens (grounding Acc@0.5 0.0 after SFT). For a named
object among several, 1500 steps were not enough (docs/benchmarks.md), so no recipe turns this on yet.

So after the copy pre-training and before the tiny model is saved, it is trained on fresh synthetic
scenes to answer "Where is the <colour> <shape>?" with ``the <colour> <shape>: [{"bbox_2d":[...],
"depth":...}]``: the same two-image prompt as SIF training, the SIF area format, the trajectory
builder's normalised boxes and box depth, and the object's name copied from the question (which keeps
the copy circuit in use). The tower trains with the language model here, as in a VLM's pre-training; a
recipe's ``freeze_vision`` applies to SFT and GRPO afterwards. Only the tiny builder calls this.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

BATCH_SIZE = 8
LEARNING_RATE = 2e-3
WARMUP = 20
SEED_OFFSET = 7_000_000  # scene seeds far from the data builds' (train seed * 1e6 + index, eval 100000)


def ground_scene(seed: int, width: int, height: int, alone: bool = False,
                 crowd: tuple[int | None, ...] | None = None) -> tuple[Any, Any]:
    """The scene of ``seed`` and the object its example asks about (visible, its name unique in the scene).

    ``alone``: a scene of that one object (benchmarks/ground_probe.py's first stage). ``crowd``: the object
    counts to draw from (None in it: the builder's 3-8), instead of the mix below (the base probe's
    per-size groups)."""
    from sifthinker.scenes import generate_scene
    from sifthinker.scenes.model import MIN_VISIBLE_PIXELS

    # A third of the scenes hold one object, a third two or three, a third the builder's 3-8: alone, an
    # object's box is learnt first (measured: 600-1200 steps), the crowded scenes ask to pick it by name.
    rng = random.Random(seed)
    crowd = (1,) if alone else crowd or rng.choice(((1,), (2, 3), (None,)))
    scene = generate_scene(seed, width, height, num_objects=rng.choice(crowd))
    names: dict[str, int] = {}
    for o in scene.objects:
        names[o.name] = names.get(o.name, 0) + 1
    objs = [o for o in scene.objects if o.box is not None and o.visible_pixels >= MIN_VISIBLE_PIXELS
            and names[o.name] == 1]
    return scene, rng.choice(objs)


def grounding_item(seed: int, width: int, height: int, alone: bool = False,
                   crowd: tuple[int | None, ...] | None = None) -> tuple[str, str, list[Any]]:
    """One example: (question, target, [RGB image, colour depth image]) for the scene of ``seed``."""
    from PIL import Image

    from sifthinker.data.trajectory import normalize_boxes
    from sifthinker.method.depth import colorize, mean_depth

    scene, obj = ground_scene(seed, width, height, alone, crowd)
    (box,) = normalize_boxes([obj.box], width, height)
    area = {"bbox_2d": list(box), "depth": round(mean_depth(scene.depth, box), 3)}
    target = f"the {obj.name}: [{json.dumps(area, separators=(',', ':'))}]"
    return f"Where is the {obj.name}?", target, [Image.fromarray(scene.rgb), colorize(scene.depth)]


def vlm_batch(processor: Any, items: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
    """Model inputs with labels on the target only (prompt and padding masked)."""
    from sifthinker.method.prompts import chat_messages

    texts = [processor.apply_chat_template(chat_messages(q, a), tokenize=False) for q, a, _ in items]
    prompts = [processor.apply_chat_template(chat_messages(q), tokenize=False, add_generation_prompt=True)
               for q, _, _ in items]
    images = [im for _, _, ims in items for im in ims]
    # Right padding: the target's labels then start at the prompt's length in every row.
    enc = processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="right")
    labels = enc["input_ids"].clone()
    # The prompt's token count: its text's, with each image's one pad token expanded by the processor to
    # the image's merged patches (counted from the grid, so the images are not processed twice).
    per_image = (enc["image_grid_thw"].prod(-1) // processor.image_processor.merge_size ** 2).tolist()
    k = 0
    for i, prompt in enumerate(prompts):
        n_images = len(items[i][2])
        n = len(processor.tokenizer(prompt)["input_ids"]) + sum(per_image[k:k + n_images]) - n_images
        k += n_images
        labels[i, :n] = -100
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return enc


def grounding_pretrain(model: PreTrainedModel, processor: Any, steps: int, width: int, height: int,
                       seed: int = 0, log_every: int = 50, alone_steps: int = 0,
                       on_log: Callable[[int], None] | None = None, vision_lr_scale: float = 1.0) -> float:
    """Train ``model`` in place to box named objects; returns the last logged step's loss.

    ``alone_steps``: the first steps show one object per scene (a curriculum; measured, it did not help
    with crowded scenes). ``on_log(step)``: called after each logged step (benchmarks/ground_probe.py
    evaluates there; it must leave the model in train mode). ``vision_lr_scale``: see
    :func:`.pretrain.make_optimizer`."""
    import torch

    from sifthinker.model.pretrain import optimizer_step

    step_fn = optimizer_step(model, LEARNING_RATE, WARMUP, steps, vision_lr_scale=vision_lr_scale)
    model.train()
    loss, t0 = float("nan"), time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(1, steps + 1):
            first = SEED_OFFSET + seed * 1_000_000 + (step - 1) * BATCH_SIZE
            alone = step <= alone_steps
            enc = vlm_batch(processor, [grounding_item(first + k, width, height, alone) for k in range(BATCH_SIZE)])
            out = model(**enc)
            step_fn(out.loss)
            if step % log_every == 0 or step == steps:
                loss = out.loss.item()
                log.info("grounding pre-training step %d/%d: loss %.3f (%.0f s)", step, steps, loss,
                         time.monotonic() - t0)
                if on_log is not None:
                    on_log(step)
    model.eval()
    return loss
