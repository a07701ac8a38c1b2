"""Stage events: what a running stage tells whoever watches it (the local run's console).

A stage appends one JSON line per event to the file named by ``$SIFTHINKER_EVENTS`` (nothing happens
when it is unset, e.g. on a cluster, where KFP shows each step). The pipeline's steps run as separate
processes, so a file is the simplest channel that works across them; lines are short and written with
one ``write`` in append mode, so concurrent writers do not interleave.

Events: ``start``; ``progress`` (``done``, ``total``, ``note``), at most one a second per stage;
``done`` (``summary``: the stage's key numbers in a few words); ``failed`` (``error``: one line).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sifthinker.names import Env

__all__ = ["emit", "progress", "read_new"]

_PROGRESS_INTERVAL_S = 1.0
_last_progress: dict[str, float] = {}


def emit(event: str, stage: str, **data: Any) -> None:
    """Append one event for ``stage`` to ``$SIFTHINKER_EVENTS`` (a no-op when it is unset)."""
    path = os.environ.get(Env.EVENTS)
    if not path:
        return
    line = json.dumps({"t": time.time(), "event": event, "stage": stage, **data}, default=str) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # watching is a convenience: a stage never fails because nobody can listen


def progress(stage: str, done: int, total: int | None = None, note: str = "", force: bool = False) -> None:
    """A progress event (``done`` of ``total`` units, plus a short note), rate-limited per stage."""
    now = time.monotonic()
    if not force and now - _last_progress.get(stage, 0.0) < _PROGRESS_INTERVAL_S and done != total:
        return
    _last_progress[stage] = now
    emit("progress", stage, done=done, total=total, note=note)


def read_new(path: str | Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Events appended to ``path`` since byte ``offset``, and the offset to read from next time.

    A trailing partial line (a writer mid-write) is left for the next call.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    out = []
    for raw in chunk[:end].splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue  # not ours: the file is only ever written by emit()
    return out, offset + end


def follow(path: str | Path, offset: int = 0) -> Iterator[dict[str, Any]]:
    """Every event now in ``path`` from ``offset`` on (one pass, no waiting)."""
    events, _ = read_new(path, offset)
    yield from events
