"""Does the model read the image? Two cheap diagnostics for the pre-training of the tiny base.

A model that ignores its images still learns the answer format and the answers' priors, and its loss
falls; greedy replies then look right and point nowhere. :func:`image_reliance` tells the cases apart
with one extra forward pass: the loss on the same items with every item's images swapped for the next
item's. If the two losses are equal the image contributes nothing. :func:`image_feature_norm` is the mean
norm of the vision tower's output tokens, which enter the language model's residual stream unnormalised:
when it grows far past the text embeddings' norm, the RMSNorm after it scales the gradient that reaches
the tower down by as much.
"""

from __future__ import annotations

from typing import Any


def image_reliance(model: Any, processor: Any, items: list[tuple[str, str, list[Any]]]) -> dict[str, float]:
    """``loss`` on ``items`` (question, target, images) and ``loss_shuffled`` with each item's images
    taken from the next item (cyclically); ``gap`` = shuffled - true (0: the images are not used)."""
    import torch

    from sifthinker.model.ground_pretrain import vlm_batch

    if len(items) < 2:
        raise ValueError("image_reliance needs at least 2 items to swap their images")
    shuffled = [(q, a, items[(i + 1) % len(items)][2]) for i, (q, a, _) in enumerate(items)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            true = model(**vlm_batch(processor, items)).loss.item()
            other = model(**vlm_batch(processor, shuffled)).loss.item()
    finally:
        model.train(was_training)
    return {"loss": true, "loss_shuffled": other, "gap": other - true}


def image_feature_norm(model: Any, processor: Any, images: list[Any]) -> dict[str, float]:
    """Mean L2 norm of the vision tower's merged output tokens for ``images`` (``vision``) and of the
    text embedding rows (``text``)."""
    import torch

    from sifthinker.model.loading import vision_tower

    enc = processor.image_processor(images=images, return_tensors="pt")
    tower = vision_tower(model)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no vision tower")
    with torch.no_grad():
        out = tower(enc["pixel_values"].to(next(tower.parameters()).dtype), grid_thw=enc["image_grid_thw"])
        feats = getattr(out, "pooler_output", out)
        text = model.get_input_embeddings().weight.norm(dim=-1).mean().item()
    return {"vision": feats.norm(dim=-1).mean().item(), "text": text}


def image_use_metrics(model: Any, processor: Any, items: list[tuple[str, str, list[Any]]]) -> dict[str, float]:
    """The pre-training probe's view of both: ``image/gap`` (:func:`image_reliance` on ``items``),
    ``image/vision_norm`` (on the first item's RGB image) and ``image/text_norm``."""
    gap = image_reliance(model, processor, items)["gap"]
    norms = image_feature_norm(model, processor, [items[0][2][0]])
    return {"image/gap": gap, "image/vision_norm": norms["vision"], "image/text_norm": norms["text"]}
