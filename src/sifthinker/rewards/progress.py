"""Answer-progress stores for r_answer's progress term, keyed by (question, image) (spec 3, defect P2).

r_answer = s + max(0, s - s_prev), where s_prev is the group-mean answer score of the same
(question, image) at its *previous* visit. The original kept that record in a process-local list,
skipped groups whose mean was 0 and so never gave a bonus within one epoch. Here the record lives in a
:class:`ProgressStore`: :class:`MemoryProgressStore` for one process and tests,
:class:`SQLiteProgressStore` for training (it survives restarts and is shared by all ranks on a node,
or by all nodes on a shared file system that supports SQLite locking).

The progress term needs at least two visits of the same (question, image): on the first visit there is
no s_prev and the term is 0. With one epoch over distinct items it is therefore always 0 unless the
store is carried over from an earlier run (keep its path) or the data repeats items (several epochs).

:class:`ProgressExchange` does one visit's bookkeeping for the answer reward. Under several processes
TRL splits one prompt's group of rollouts across ranks, so each rank sees part of it: the exchange
gathers every rank's scores, rank 0 alone reads the previous values and writes the whole group's mean,
and every rank gets the previous values back (spec D4). Rank 0 owning the store also makes it one file
per run, which a checkpoint copies (:func:`snapshot_sqlite`) and a resumed run restores
(:func:`restore_sqlite`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["MemoryProgressStore", "ProgressExchange", "ProgressStore", "SQLiteProgressStore", "progress_key"]
__all__ += ["restore_sqlite", "snapshot_sqlite"]

log = logging.getLogger(__name__)


def progress_key(question: str, image: str | None) -> str:
    """A stable key for (question, image): sha256 of their JSON encoding, hex.

    JSON keeps the two fields apart (no "ab" + "c" == "a" + "bc" collisions). The image path is used
    as given: the same image under a relative and an absolute path gives two keys, so feed the reward
    the same column every run.
    """
    payload = json.dumps([str(question), None if image is None else str(image)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ProgressStore(Protocol):
    """Last stored group-mean answer score per progress key."""

    def get(self, key: str) -> float | None: ...

    def put(self, key: str, value: float) -> None: ...


class MemoryProgressStore:
    """A dict behind a lock: one process, lost on exit (tests, single-GPU debugging)."""

    def __init__(self) -> None:
        self._data: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> float | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: float) -> None:
        with self._lock:
            self._data[key] = float(value)

    def __len__(self) -> int:
        return len(self._data)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS progress (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL,
    visits INTEGER NOT NULL DEFAULT 1,
    updated REAL NOT NULL
)
"""


class SQLiteProgressStore:
    """A SQLite table ``progress(key, value, visits, updated)`` in WAL mode.

    Safe across processes: every operation is one short autocommitted statement (readers never block
    the writer under WAL; writers wait up to ``timeout`` seconds for the lock), and ``put`` is an
    upsert, so concurrent ranks never fail on a duplicate key (the last writer wins). Connections are
    opened per process id because a SQLite connection must not cross a ``fork``.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()  # fail early on an unwritable path and create the table once

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # isolation_level=None: autocommit, so no transaction stays open between calls.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough for a reward cache, much faster
            conn.execute(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, key: str) -> float | None:
        with self._lock:
            row = self._connect().execute("SELECT value FROM progress WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def put(self, key: str, value: float) -> None:
        with self._lock:
            self._connect().execute(
                "INSERT INTO progress (key, value, visits, updated) VALUES (?, ?, 1, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, visits = progress.visits + 1, "
                "updated = excluded.updated",
                (key, float(value), time.time()),
            )

    def visits(self, key: str) -> int:
        """How many times ``put`` was called for ``key`` (0 if never)."""
        with self._lock:
            row = self._connect().execute("SELECT visits FROM progress WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM progress").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn, self._pid = None, None

    def __getstate__(self) -> dict[str, object]:
        # Pickling (e.g. into a spawned worker) carries only the path; the worker opens its own connection.
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.path, self.timeout = state["path"], state["timeout"]  # type: ignore[assignment]
        self._lock, self._conn, self._pid = threading.Lock(), None, None

    def __enter__(self) -> SQLiteProgressStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot_sqlite(live: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """A consistent copy of the SQLite file ``live`` at ``dest`` (committed WAL content included)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    src, dst = sqlite3.connect(live), sqlite3.connect(dest)
    try:
        src.backup(dst)  # SQLite's online backup: safe while other connections use the store
    finally:
        dst.close()
        src.close()
    return dest


def restore_sqlite(snapshot: str | os.PathLike[str], live: str | os.PathLike[str]) -> None:
    """Replace the SQLite file ``live`` by ``snapshot``; call it before any store opens ``live``."""
    live = Path(live)
    live.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed over the restored pages
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(snapshot, live)


# ---- one visit, across ranks ----------------------------------------------------------------------


class _LocalComm:
    rank = 0

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj


class _TorchComm:
    """torch.distributed's object collectives (gloo on CPU, NCCL on GPUs)."""

    def __init__(self, dist: Any) -> None:
        self.dist, self.rank = dist, dist.get_rank()

    def all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.dist.get_world_size()
        self.dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]


def default_comm() -> _LocalComm | _TorchComm:
    """The torch process group when one is running with more than one rank, else this process alone."""
    torch = sys.modules.get("torch")  # never import torch here: without it there is no process group
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _TorchComm(dist)
    return _LocalComm()


class ProgressExchange:
    """The previous visit's value per progress key, and this visit's value stored, consistently across ranks.

    Stored per key (spec D4): ``fixed``, the mean of the answer score s over the whole group (zeros
    included); ``original``, the mean of the bonus-included reward, and nothing when it is 0 (defect P2 as
    the original had it). ``store`` is only used on rank 0 (other ranks may pass None). Every rank must call
    :meth:`visit` at the same point (the reward functions run in lockstep under TRL). A failing store is
    logged and read as "no previous visit", so an infrastructure hiccup cannot stop training.
    """

    def __init__(self, store: ProgressStore | None, *, original: bool = False, comm: Any = None) -> None:
        self.store, self.original, self._comm = store, original, comm

    def _stored_value(self, scores: list[float], prev: float | None) -> float | None:
        if not self.original:
            return math.fsum(scores) / len(scores)
        rewards = [s if prev is None else s + max(0.0, s - prev) for s in scores]
        mean = math.fsum(rewards) / len(rewards)
        return mean if mean != 0 else None

    def _read_and_write(self, merged: dict[str, list[float]]) -> dict[str, float | None]:
        prev: dict[str, float | None] = {}
        for key in sorted(merged):
            try:
                prev[key] = None if self.store is None else self.store.get(key)
            except Exception as exc:
                log.warning("progress store get failed: %s", exc)
                prev[key] = None
            value = self._stored_value(merged[key], prev[key])
            if value is None or self.store is None:
                continue
            try:
                self.store.put(key, value)
            except Exception as exc:
                log.warning("progress store put failed: %s", exc)
        return prev

    def visit(self, scores: dict[str, list[float]]) -> dict[str, float | None]:
        """``scores``: this rank's answer scores per key; returns each key's previous value (None: first visit)."""
        comm = self._comm if self._comm is not None else default_comm()
        merged: dict[str, list[float]] = {}
        for part in comm.all_gather({k: [float(v) for v in vs] for k, vs in scores.items()}):
            for key, values in part.items():
                merged.setdefault(key, []).extend(values)
        prev = comm.broadcast(self._read_and_write(merged) if comm.rank == 0 else None)
        return {key: prev.get(key) for key in scores}
