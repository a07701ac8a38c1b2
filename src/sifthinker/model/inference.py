"""Batched generation for evaluation and serving: the user prompt of the spec with both images.

A request is (RGB image, colour depth image, question), plus further RGB images and their depth images
for multi-image items (SAT). The prompt is `prompts.chat_messages(question, n_images=...)` rendered by the processor's chat template with the generation prompt, exactly as in training, and the
images are encoded once (single-pass inference, spec section 1). Prompts are left-padded so every row
of a batch continues from its last prompt token; only the newly generated tokens are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sifthinker.method.prompts import chat_messages


@dataclass(frozen=True)
class GenRequest:
    """One question about one image: the RGB image, its colour depth rendering and the question.

    ``more_images`` / ``more_depth_images``: further RGB images of a multi-image item and their depth
    images, in the same order; the model sees every RGB image, then every depth image.
    """

    image: Image.Image
    depth_image: Image.Image
    question: str
    more_images: tuple[Image.Image, ...] = ()
    more_depth_images: tuple[Image.Image, ...] = ()

    def __post_init__(self) -> None:
        if len(self.more_images) != len(self.more_depth_images):
            raise ValueError(f"{len(self.more_images)} more RGB images but {len(self.more_depth_images)} more "
                             "depth images: every RGB image needs its depth image")

    @property
    def images(self) -> list[Image.Image]:
        """What the model sees, in prompt order: all RGB images, then all depth images."""
        return [self.image, *self.more_images, self.depth_image, *self.more_depth_images]


def _chunks(items: Sequence[GenRequest], size: int) -> Iterator[Sequence[GenRequest]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_inputs(processor: Any, requests: Sequence[GenRequest]) -> Any:
    """Tokenised, left-padded model inputs (with pixel values) for a batch of requests."""
    texts = [processor.apply_chat_template(chat_messages(r.question, n_images=1 + len(r.more_images)),
                                           tokenize=False, add_generation_prompt=True)
             for r in requests]
    images = [[im.convert("RGB") for im in r.images] for r in requests]
    return processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")


def _stop_ids(model: Any, processor: Any) -> list[int]:
    """Token ids that end a completion: the generation config's eos ids plus the tokenizer's eos."""
    eos = model.generation_config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    tok_eos = processor.tokenizer.eos_token_id
    if tok_eos is not None and tok_eos not in ids:
        ids.append(tok_eos)
    return ids


def suppressed_ids(model: Any, processor: Any) -> list[int]:
    """Ids generation must never emit: the image placeholder, and the embedding rows past the tokenizer's
    vocabulary (Qwen2.5-VL pads its 151,665 tokens to 152,064 rows; an untrained or lightly trained model
    may well pick such a row, which decodes to nothing)."""
    rows = model.get_input_embeddings().num_embeddings
    return [model.config.image_token_id, *range(len(processor.tokenizer), rows)]


def generate(model: Any, processor: Any, requests: Sequence[GenRequest], max_new_tokens: int,
             temperature: float = 0.0, batch_size: int = 8) -> list[str]:
    """Generate one completion per request; returns the decoded completions (special tokens skipped).

    temperature 0 is greedy decoding (deterministic, what evaluation and the gate use); a positive
    temperature samples with that temperature and no top-k / top-p truncation.
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not requests:
        return []
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": float(temperature), "top_k": 0, "top_p": 1.0}
        if temperature > 0
        # Greedy: clear the sampling knobs a hub generation_config may carry (Qwen ships temperature 0.1,
        # top_k 1...) so transformers does not warn that they are ignored.
        else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    )
    device = next(model.parameters()).device
    suppress = suppressed_ids(model, processor)
    out: list[str] = []
    for batch in _chunks(list(requests), batch_size):
        inputs = build_inputs(processor, batch).to(device)
        with torch.inference_mode():
            ids = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=_stop_ids(model, processor),
                suppress_tokens=suppress,
                **sampling,
            )
        new = ids[:, inputs["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    return [text.strip() for text in out]
