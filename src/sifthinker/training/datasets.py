"""SIF records (`DIR/records.json`) -> TRL datasets for SFT and GRPO.

SFT (TRL's conversational language-modelling format with images):
    messages: [user: chat_messages(question) parts, assistant: [{"type": "text", "text": trace}]]
    images:   [RGB, colour depth]       (decoded lazily from the record's files)

GRPO (TRL's conversational prompt format with images, plus the reward columns of docs/architecture.md):
    prompt:   [user: chat_messages(question) parts]
    images:   [RGB, colour depth]
    response, answer_type, problem, image (absolute RGB path: the progress key), gt_boxes
    (normalised boxes from normalized_solution_round.bbox_3d), depth_map (absolute .npy path), id, category

Both images are used everywhere (spec defect P1: the original RL rollouts saw only the RGB image);
`grpo.prompt_images: rgb` (set by `parity: original`) reproduces the original's RL prompt: the RGB image,
then the question and instruction. The SFT dataset must not carry an `image` column: TRL's vision
collator would take it for a picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sifthinker.data import build
from sifthinker.method.prompts import INSTRUCTION, chat_messages, question_from_prompt

if TYPE_CHECKING:
    from datasets import Dataset



def load_records(data_dir: str | Path) -> list[dict]:
    """The record list of a built dataset folder; training needs at least one record."""
    records = build.load_records(Path(data_dir))
    if not records:
        raise ValueError(f"{Path(data_dir) / build.RECORDS_FILE} holds no records")
    return records


def resolve(root: Path, rel: str) -> str:
    """A record path made absolute against the dataset folder (absolute paths are kept)."""
    p = Path(rel)
    return str(p if p.is_absolute() else (Path(root) / p).resolve())


def question(rec: dict) -> str:
    """The record's question: `problem`, or recovered from the sharegpt user prompt."""
    if rec.get("problem"):
        return str(rec["problem"])
    user = next((m for m in rec.get("messages", []) if m.get("role") == "user"), None)
    if user is None or not isinstance(user.get("content"), str):
        raise ValueError(f"record {rec.get('id')!r} has neither a problem nor a user prompt")
    return question_from_prompt(user["content"])


def assistant_trace(rec: dict) -> str:
    """The assistant's SIF trace of a record (the SFT target)."""
    for m in rec.get("messages", []):
        if m.get("role") == "assistant":
            content = m.get("content")
            if isinstance(content, list):  # already in parts form
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            if isinstance(content, str) and content.strip():
                return content
    raise ValueError(f"record {rec.get('id')!r} has no assistant trace")


def image_paths(rec: dict, root: Path) -> list[str]:
    """[RGB, colour depth] as absolute paths (from `images`, else from `image` / `depth_image`)."""
    rels = rec.get("images") or [rec.get("image"), rec.get("depth_image")]
    if len(rels) != 2 or not all(rels):
        raise ValueError(f"record {rec.get('id')!r} must name two images (RGB and depth)")
    return [resolve(root, r) for r in rels]


def gt_boxes(rec: dict) -> list[list[float]]:
    """Ground-truth evidence boxes, per-axis normalised (spec section 6: one frame everywhere)."""
    frame = rec.get("box_frame", "norm")
    if frame != "norm":
        raise ValueError(f"record {rec.get('id')!r} has box_frame {frame!r}; training needs 'norm'")
    boxes = (rec.get("normalized_solution_round") or {}).get("bbox_3d") or []
    return [[float(v) for v in b] for b in boxes]


def _strip_placeholders(messages: list[dict]) -> list[dict]:
    """Arrow needs one struct type per column: give every part the same keys (type, text)."""
    out = []
    for m in messages:
        parts = [{"type": p["type"], "text": p.get("text")} for p in m["content"]]
        out.append({"role": m["role"], "content": parts})
    return out


def sft_rows(records: list[dict], root: str | Path) -> list[dict[str, Any]]:
    """Plain-dict SFT rows (images as absolute paths); see the module docstring."""
    root = Path(root)
    return [{"messages": _strip_placeholders(chat_messages(question(r), assistant_trace(r))),
             "images": image_paths(r, root)} for r in records]


def rgb_only_messages(question_text: str) -> list[dict]:
    """The original's RL prompt (P1): the RGB image, then the question and the instruction."""
    return [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": f"{question_text.strip()} {INSTRUCTION}"}]}]


def grpo_rows(records: list[dict], root: str | Path, prompt_images: str = "rgb+depth") -> list[dict[str, Any]]:
    """Plain-dict GRPO rows (images as absolute paths) with every column the rewards read.

    ``prompt_images``: ``rgb+depth`` (the spec's two-image prompt) or ``rgb`` (the original's, P1).
    """
    if prompt_images not in ("rgb+depth", "rgb"):
        raise ValueError(f"prompt_images must be 'rgb+depth' or 'rgb', got {prompt_images!r}")
    root = Path(root)
    rows = []
    for r in records:
        images = image_paths(r, root)
        both = prompt_images == "rgb+depth"
        rows.append({
            "prompt": _strip_placeholders(chat_messages(question(r)) if both else rgb_only_messages(question(r))),
            "images": images if both else images[:1],
            "image": images[0],
            "problem": question(r),
            # None, not "", when absent: the answer reward then names the missing ground truth.
            "response": None if r.get("response") is None else str(r["response"]),
            "answer_type": str(r.get("answer_type") or ""),
            "gt_boxes": gt_boxes(r),
            "depth_map": resolve(root, r["depth_map"]) if r.get("depth_map") else None,
            "id": str(r.get("id", "")),
            "category": str(r.get("category", "")),
        })
    return rows


def _with_images(rows: list[dict[str, Any]]) -> Dataset:
    """A `datasets.Dataset` whose `images` column decodes the files to PIL images on access."""
    from datasets import Dataset, Image, List

    ds = Dataset.from_list(rows)
    return ds.cast_column("images", List(Image()))


def sft_dataset(records: list[dict], root: str | Path) -> Dataset:
    """TRL SFT dataset (messages + images) of a record list."""
    return _with_images(sft_rows(records, root))


def grpo_dataset(records: list[dict], root: str | Path, prompt_images: str = "rgb+depth") -> Dataset:
    """TRL GRPO dataset (prompt + images + reward columns) of a record list."""
    return _with_images(grpo_rows(records, root, prompt_images))
