"""The SIFThinker user prompt (spec section 1): the RGB image(s), then their colour depth image(s), then
the instruction.

One RGB image is the spec's two-image prompt (``Original image: <image>\\nDepth image: <image>\\n...``).
Items with several RGB images (SAT's multi-image questions) get all RGB images first, numbered, then
their depth images in the same order (``Original image 1: <image>\\nOriginal image 2: <image>\\nDepth
image 1: <image>\\n...``), so no image is silently dropped (benchmarks spec, E5).
"""

from __future__ import annotations

import re

INSTRUCTION = (
    "Please first output the thinking process in <think> </think> tags, where bounding box with depth is "
    "enclosed in <area> </area> tags and text analysis is enclosed in <text> </text> tags, alternating "
    "between them to iteratively refine the focused area. Then output the final answer in <answer> </answer> tags."
)
_LAST_LABEL_RE = re.compile(r"Depth image(?: \d+)?: <image>\n")


def _labels(n_images: int) -> list[str]:
    """The label before each image placeholder: n RGB labels, then n depth labels."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if n_images == 1:
        return ["Original image: ", "Depth image: "]
    return [f"Original image {i}: " for i in range(1, n_images + 1)] + [f"Depth image {i}: "
                                                                         for i in range(1, n_images + 1)]


def prompt_text(question: str, n_images: int = 1) -> str:
    """Sharegpt form with `<image>` placeholders (the released SIF-50K and LLaMA-Factory style)."""
    return "".join(f"{label}<image>\n" for label in _labels(n_images)) + f"{question.strip()} {INSTRUCTION}"


def chat_messages(question: str, answer: str | None = None, n_images: int = 1) -> list[dict]:
    """Chat-template form for Qwen2.5-VL processors: image parts take the places of the placeholders."""
    content: list[dict] = []
    for i, label in enumerate(_labels(n_images)):
        content += [{"type": "text", "text": label if i == 0 else f"\n{label}"}, {"type": "image"}]
    content.append({"type": "text", "text": f"\n{question.strip()} {INSTRUCTION}"})
    msgs = [{"role": "user", "content": content}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def question_from_prompt(text: str) -> str:
    """Recover the question from a sharegpt prompt (inverse of prompt_text)."""
    body = _LAST_LABEL_RE.split(text)[-1]
    return body.replace(INSTRUCTION, "").strip()
