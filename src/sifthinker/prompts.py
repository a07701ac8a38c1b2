"""The SIFThinker user prompt (spec section 1): two images, RGB then colour depth, then the instruction."""

from __future__ import annotations

INSTRUCTION = (
    "Please first output the thinking process in <think> </think> tags, where bounding box with depth is "
    "enclosed in <area> </area> tags and text analysis is enclosed in <text> </text> tags, alternating "
    "between them to iteratively refine the focused area. Then output the final answer in <answer> </answer> tags."
)


def prompt_text(question: str) -> str:
    """Sharegpt form with `<image>` placeholders (the released SIF-50K and LLaMA-Factory style)."""
    return f"Original image: <image>\nDepth image: <image>\n{question.strip()} {INSTRUCTION}"


def chat_messages(question: str, answer: str | None = None) -> list[dict]:
    """Chat-template form for Qwen2.5-VL processors: image parts take the places of the placeholders."""
    user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Original image: "},
            {"type": "image"},
            {"type": "text", "text": "\nDepth image: "},
            {"type": "image"},
            {"type": "text", "text": f"\n{question.strip()} {INSTRUCTION}"},
        ],
    }
    msgs = [user]
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def question_from_prompt(text: str) -> str:
    """Recover the question from a sharegpt prompt (inverse of prompt_text)."""
    body = text.split("Depth image: <image>\n", 1)[-1]
    return body.replace(INSTRUCTION, "").strip()
