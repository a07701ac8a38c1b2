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
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

__all__ = ["MemoryProgressStore", "ProgressStore", "SQLiteProgressStore", "progress_key"]


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
