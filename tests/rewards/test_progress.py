"""Tests for the answer-progress stores and their exchange across ranks (sifthinker.rewards.progress)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import numpy as np
import pytest

from sifthinker.rewards.progress import (
    MemoryProgressStore,
    ProgressExchange,
    ProgressStore,
    SQLiteProgressStore,
    progress_key,
    restore_sqlite,
    snapshot_sqlite,
)


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


# ---- ProgressExchange: one visit's bookkeeping, across ranks ---------------------------------------------


def test_exchange_stores_whole_group_mean_and_returns_previous(tmp_path: Path) -> None:
    store = SQLiteProgressStore(tmp_path / "p.db")
    ex = ProgressExchange(store)
    assert ex.visit({"a": [1.0, 0.0, 0.0, 0.0], "b": [0.0, 0.0]}) == {"a": None, "b": None}
    assert (store.get("a"), store.get("b")) == (0.25, 0.0)  # zeros are stored (defect P2)
    assert ex.visit({"a": [1.0, 1.0]}) == {"a": 0.25}
    assert store.get("a") == 1.0 and store.visits("a") == 2
    # The original's rules: the bonus-included mean is stored, a zero mean is not.
    orig = ProgressExchange(MemoryProgressStore(), original=True)
    assert orig.visit({"k": [0.0, 0.0]}) == {"k": None} and len(orig.store) == 0
    assert orig.visit({"k": [1.0, 0.0]}) == {"k": None} and orig.store.get("k") == 0.5
    assert orig.visit({"k": [1.0, 1.0]}) == {"k": 0.5} and orig.store.get("k") == 1.5  # (1.5 + 1.5) / 2


def test_snapshot_and_restore_sqlite(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    store = SQLiteProgressStore(live)
    store.put("k", 0.25)
    snap = snapshot_sqlite(live, tmp_path / "ckpt" / "progress.sqlite")  # while the store is open (WAL)
    store.put("k", 0.75)
    store.put("later", 1.0)
    store.close()
    restore_sqlite(snap, live)
    back = SQLiteProgressStore(live)
    assert back.get("k") == 0.25 and back.get("later") is None and back.visits("k") == 1


def _rank(rank: int, port: int, db: str, out: str) -> None:
    """One of two gloo ranks calling the answer reward on its half of each group, over two epochs."""
    import json

    import torch.distributed as dist

    from sifthinker.rewards.reward_funcs import make_answer_reward

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    store = SQLiteProgressStore(db) if rank == 0 else None  # rank 0 alone owns the store
    reward = make_answer_reward(exchange=ProgressExchange(store))
    # Groups of 4 rollouts of prompts A and B, split 2 + 2 over the ranks as TRL's sampler does.
    epochs = [{0: {"A": ["yes", "no"], "B": ["no", "no"]}, 1: {"A": ["yes", "yes"], "B": ["no", "yes"]}},
              {0: {"A": ["yes", "yes"], "B": ["yes", "no"]}, 1: {"A": ["no", "no"], "B": ["yes", "yes"]}}]
    results = []
    for epoch in epochs:
        mine = epoch[rank]
        comps = [f"<answer>{a}</answer>" for q in mine for a in mine[q]]
        problems = [q for q in mine for _ in mine[q]]
        n = len(comps)
        results.append(reward(comps, response=["yes"] * n, answer_type=["yes_no"] * n, problem=problems,
                              image=["img.png"] * n))
    Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def test_exchange_gathers_split_groups_across_two_processes(tmp_path: Path) -> None:
    import json

    from sifthinker.serving.process import free_port

    port, db = free_port(), str(tmp_path / "p.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, port, db, str(tmp_path / f"r{r}.json"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    r0, r1 = (json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2))
    # Epoch 1: first visit, r = s. Whole-group means: A 3/4, B 1/4 (a rank's own half would be 1/2 or 1).
    assert (r0[0], r1[0]) == ([1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0])
    # Epoch 2: right answers earn 1 + (1 - s_prev) with the whole group's s_prev: A 1.25, B 1.75.
    assert (r0[1], r1[1]) == ([1.25, 1.25, 1.75, 0.0], [0.0, 0.0, 1.75, 1.75])
    store = SQLiteProgressStore(db)
    a, b = (progress_key(q, "img.png") for q in "AB")
    assert (store.get(a), store.get(b)) == (0.5, 0.75)
    assert (store.visits(a), store.visits(b)) == (2, 2)  # one write per group and visit, not one per rank
