"""Export a built dataset for other trainers: LLaMA-Factory's sharegpt layout (``sifthinker data export``).

``export_llamafactory(DIR, OUT)`` writes ``OUT/<name>.json`` (one item per record: ``messages`` = the
user prompt with its two ``<image>`` placeholders and the assistant trace, ``images`` = [RGB, colour
depth]) and ``OUT/dataset_info.json`` with the entry LLaMA-Factory needs for it::

    {"SIF-50K": {"file_name": "SIF-50K.json", "formatting": "sharegpt",
                 "columns": {"messages": "messages", "images": "images"},
                 "tags": {"role_tag": "role", "content_tag": "content",
                          "user_tag": "user", "assistant_tag": "assistant"}}}

so the SIF-50K SFT recipe (``dataset: SIF-50K``, ``dataset_dir: OUT``) runs on it unchanged. Image
paths are relative to OUT (LLaMA-Factory resolves them against ``media_dir``, which defaults to
``dataset_dir``); with ``copy_images`` the images are copied into ``OUT/images`` and OUT stands alone.
An existing ``dataset_info.json`` in OUT keeps its other entries.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sifthinker.data.build import load_records

FORMATS = ("llamafactory",)


def _entry(name: str) -> dict:
    return {"file_name": f"{name}.json", "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def export_llamafactory(data_dir: str | Path, out_dir: str | Path, name: str = "SIF-50K",
                        copy_images: bool = False) -> Path:
    """Write the sharegpt file and its ``dataset_info.json`` entry (module docstring); returns the file."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    records = load_records(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for rec in records:
        msgs = rec.get("messages") or []
        if [m.get("role") for m in msgs] != ["user", "assistant"]:
            raise ValueError(f"record {rec.get('id')!r}: expected a user and an assistant message")
        images = []
        for rel in rec["images"]:
            src = data_dir / rel
            if copy_images:
                dest = out_dir / "images" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                images.append(Path("images", rel).as_posix())
            else:
                images.append(Path(os.path.relpath(src, out_dir.resolve())).as_posix())
        if msgs[0]["content"].count("<image>") != len(images):
            raise ValueError(f"record {rec.get('id')!r}: {len(images)} images but "
                             f"{msgs[0]['content'].count('<image>')} <image> placeholders")
        items.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs], "images": images})
    target = out_dir / f"{name}.json"
    target.write_text(json.dumps(items, ensure_ascii=False, indent=1))
    info_path = out_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = _entry(name)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return target
