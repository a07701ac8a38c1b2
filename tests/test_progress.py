"""Tests for the answer-progress stores (sifthinker.progress)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import numpy as np
import pytest

from sifthinker.progress import MemoryProgressStore, ProgressStore, SQLiteProgressStore, progress_key


def test_progress_key_is_stable_and_separates_fields() -> None:
    k = progress_key("How many cubes?", "images/000001.png")
    assert k == progress_key("How many cubes?", "images/000001.png")
    assert len(k) == 64 and set(k) <= set("0123456789abcdef")  # lower-case hex sha256
    assert k != progress_key("How many cubes?", "images/000002.png")
    assert k != progress_key("How many cubes? ", "images/000001.png")
    # Plain concatenation would collide here; the JSON encoding keeps the fields apart.
    assert progress_key("ab", "c") != progress_key("a", "bc")
    assert progress_key("q", None) != progress_key("q", "None")
    # A fixed value guards against an accidental change of the key scheme (it would orphan stored records).
    # sha256 of '["q", "i"]'
    assert progress_key("q", "i") == "ea86366295420dae2d85c66091cdb1aac97c4a9c7ce49391f5cecb369dacc624"


def _roundtrip(store: ProgressStore) -> None:
    assert store.get("k") is None
    store.put("k", 0.25)
    assert store.get("k") == 0.25
    store.put("k", 0.0)  # a zero is a real value (defect P2), not "absent"
    assert store.get("k") == 0.0
    store.put("other", 1)  # an int, as a group mean of 0/1 scores can be: read back as the float 1.0
    store.put("third", 1 / 3)  # a double comes back exactly (no float32 or decimal-text rounding)
    store.put("np", np.float32(0.375))  # numpy scalars, as rewards compute them (sqlite cannot bind these)
    assert [repr(store.get(k)) for k in ("other", "third", "np")] == ["1.0", repr(1 / 3), "0.375"]


def test_memory_store() -> None:
    store = MemoryProgressStore()
    _roundtrip(store)
    assert len(store) == 4


def test_sqlite_store_roundtrip(tmp_path: Path) -> None:
    with SQLiteProgressStore(tmp_path / "sub" / "progress.db") as store:
        _roundtrip(store)
        assert len(store) == 4
        assert store.visits("k") == 2 and store.visits("nope") == 0


def test_sqlite_store_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "progress.db"
    first = SQLiteProgressStore(path)
    first.put(progress_key("q", "img.png"), 0.5)
    first.close()
    second = SQLiteProgressStore(path)  # a new process after a restart opens the same file
    assert second.get(progress_key("q", "img.png")) == 0.5
    second.put(progress_key("q", "img.png"), 0.75)
    assert second.visits(progress_key("q", "img.png")) == 2
    second.close()


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    store = SQLiteProgressStore(tmp_path / "p.db")
    store.put("k", 1.0)
    mode = store._connect().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    store.close()


def test_sqlite_store_pickles_to_its_path(tmp_path: Path) -> None:
    store = SQLiteProgressStore(tmp_path / "p.db")
    store.put("k", 0.5)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("k") == 0.5


def _writer(store: SQLiteProgressStore, worker: int, n: int) -> None:
    for i in range(n):
        store.put(f"w{worker}-{i}", float(i))
        store.put("shared", float(worker))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_sqlite_store_is_safe_across_processes(tmp_path: Path) -> None:
    # The store is created in the parent and used by forked children, like ranks spawned after setup:
    # each child must open its own connection (a SQLite connection must not cross fork).
    store = SQLiteProgressStore(tmp_path / "p.db")
    store.put("shared", -1.0)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(store, w, 30)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(store) == 2 * 30 + 1
    assert store.get("w1-29") == 29.0
    assert store.get("shared") in (0.0, 1.0)
    assert store.visits("shared") == 1 + 2 * 30  # every upsert counted: none lost to a race
    store.close()
