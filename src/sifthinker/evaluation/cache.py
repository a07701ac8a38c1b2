"""The prediction cache: ``predictions.jsonl`` in a run's output folder, appended and flushed per item.

A line is ``{"id", "response", "key"}`` (or ``"response": null`` plus ``"error"`` for an item the model
or endpoint refused). ``key`` is :func:`item_key`: a hash of the run's fingerprint (what generated the
answer: the model folder's files or the endpoint and its model name, the prompt template, the generation
settings, the depth provider) and of the item's own prompt (its question text, image paths and depth
source). A rerun reuses a line only when its key matches, so a killed run resumes where it stopped while
a changed model, prompt, setting or item is generated again. The same file, with ``id`` and ``response``
per line, is what ``sifthinker eval score`` reads.

Appends are single ``write`` calls followed by ``flush``; a line cut short by a kill is skipped on
reading (and the next append starts on a fresh line). At the end of a run :meth:`PredictionCache.compact`
rewrites the file to exactly the run's items, in item order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sifthinker.method.prompts import INSTRUCTION, chat_messages

__all__ = ["CachedAnswer", "PredictionCache", "item_key", "read_predictions", "run_fingerprint"]

log = logging.getLogger(__name__)

PROMPT_VERSION = hashlib.sha256(
    (INSTRUCTION + json.dumps([chat_messages("{q}", n_images=n) for n in (1, 2)], sort_keys=True)).encode()
).hexdigest()[:12]  # any change to the prompt template changes every key


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def run_fingerprint(generator: str, settings: Mapping[str, Any]) -> str:
    """What every answer of a run depends on: the generator's own fingerprint and the generation settings."""
    return _digest({"generator": generator, "prompt": PROMPT_VERSION, **settings})


def item_key(fingerprint: str, question: str, images: Iterable[str], depth_source: str) -> str:
    """The cache key of one item under one run fingerprint."""
    return _digest({"run": fingerprint, "question": question, "images": list(images), "depth": depth_source})


@dataclass(frozen=True)
class CachedAnswer:
    """A finished item: the response, or the error that made the endpoint or model refuse it."""

    response: str | None
    error: str | None = None


class PredictionCache:
    """``predictions.jsonl`` as a cache (module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._rows: dict[tuple[str, str], dict] = {}
        if self.path.is_file():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    row = json.loads(line)
                except ValueError:
                    log.warning("%s:%d: skipping an unreadable line (a write cut short?)", self.path, n)
                    continue
                if isinstance(row, dict) and "id" in row and "key" in row:
                    self._rows[(str(row["id"]), str(row["key"]))] = row

    def get(self, item_id: str, key: str) -> CachedAnswer | None:
        row = self._rows.get((item_id, key))
        if row is None:
            return None
        return CachedAnswer(row.get("response"), row.get("error"))

    def put(self, item_id: str, key: str, answer: CachedAnswer) -> None:
        """Record one finished item and flush it to disk before returning."""
        row: dict[str, Any] = {"id": item_id, "response": answer.response, "key": key}
        if answer.error is not None:
            row["error"] = answer.error
        self._rows[(item_id, key)] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            f.seek(0, os.SEEK_END)
            prefix = b""
            if f.tell() > 0:  # a line cut short by a kill must not swallow this one
                f.seek(-1, os.SEEK_END)
                prefix = b"" if f.read(1) == b"\n" else b"\n"
            f.write(prefix + (json.dumps(row, ensure_ascii=False) + "\n").encode())
            f.flush()  # in the kernel now: a killed process loses nothing (no fsync: a crash of the machine may)

    def compact(self, keys: Iterable[tuple[str, str]]) -> Path:
        """Rewrite the file to the rows of ``keys`` ((id, key) pairs, in order), atomically."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for k in keys:
                if k in self._rows:
                    f.write(json.dumps(self._rows[k], ensure_ascii=False) + "\n")
        tmp.replace(self.path)
        return self.path


def read_predictions(path: str | Path) -> dict[str, CachedAnswer]:
    """``{"id", "response"}`` lines (any producer) -> id -> answer; the last line of an id wins."""
    p = Path(path)
    out: dict[str, CachedAnswer] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{p}:{n}: not JSON ({e})") from e
        if not isinstance(row, dict) or "id" not in row:
            raise ValueError(f"{p}:{n}: expected an object with 'id' and 'response'")
        resp = row.get("response")
        if resp is not None and not isinstance(resp, str):
            raise ValueError(f"{p}:{n}: 'response' must be a string, got {type(resp).__name__}")
        if resp is None and not row.get("error"):
            raise ValueError(f"{p}:{n}: no 'response' (and no 'error' saying why)")
        out[str(row["id"])] = CachedAnswer(resp, row.get("error"))
    return out
