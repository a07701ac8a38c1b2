"""Full disk: the build's output folder on a real size-limited filesystem (a tmpfs mounted for the test;
skipped where mounting is not permitted). The build fails with one line naming the folder, the free space
and the space still needed; nothing half-written is marked finished; after space is freed (the tmpfs grown)
the same command resumes from the finished shards and ends with an uninterrupted build's bytes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import FAULTS, data_build_cmd, done, make_cfg, make_records, snapshot, subprocess_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_during_the_data_build_is_one_clear_line_and_the_rerun_resumes(small_fs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SIFTHINKER_WORK_DIR": str(tmp_path / "work")}
    common = ["--num", "30", "--seed", "5", "--shard-size", "3", "--width", "160", "--height", "120", "--workers", "2"]
    ref = tmp_path / "ref"
    subprocess.run(data_build_cmd(*common, "--out", str(ref)), env=env, check=True, capture_output=True)

    out = small_fs / "d"
    res = subprocess.run(data_build_cmd(*common, "--out", str(out)), env=env, capture_output=True, text=True)
    err = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1 and err.startswith(f"Error: no space left on the filesystem of {small_fs}/.d.partial")
    assert "free of 1.0 MiB" in err and "more is needed to finish" in err and "Traceback" not in res.stderr
    shards = small_fs / ".d.partial" / "shards"
    finished = done(shards)
    assert not out.exists() and 1 <= len(finished) < 10  # no dataset published
    assert [p.name for p in shards.iterdir() if p.name not in finished] == []  # no half-written shard left

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)  # space freed
    res = subprocess.run(data_build_cmd(*common, "--out", str(out)), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} resumed" in res.stdout and snapshot(out) == snapshot(ref)
    print(f"disk full after {len(finished)} of 10 shards: {err[7:]}")


@FAULTS
@pytest.mark.faults
@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_clear_line_and_the_rerun_resumes(small_fs, tmp_path):
    """GRPO-SIF with its work folder (checkpoints, progress store) on the small filesystem: a checkpoint
    after every step, until one does not fit. The step fails naming the folder and a checkpoint's size;
    the cut-short checkpoint has no marker; after space is freed the rerun resumes from the one before."""
    import json
    import sys

    pytest.importorskip("trl")

    from sifthinker.model import build_tiny_model, corpus_from_records
    from sifthinker.training.checkpoints import MARKER
    from sifthinker.training.datasets import load_records

    data = tmp_path / "data"
    make_records(data)
    model = build_tiny_model(make_cfg(tmp_path / "m"), tmp_path / "m" / "base",
                             list(corpus_from_records(load_records(data))))
    subprocess.run(["mount", "-o", "remount,size=3m", str(small_fs)], check=True)
    cfg = make_cfg(tmp_path)
    cfg.work_dir = str(small_fs / "work")
    g = cfg.grpo
    g.num_items, g.num_generations, g.per_device_batch_size, g.max_completion_length = 4, 2, 2, 24
    g.epochs, g.save_steps, g.save_total_limit, g.sample_steps = 10, 1, 2, 0
    (tmp_path / "recipe.yaml").write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "sifthinker.training.worker", "grpo-sif", "--recipe", str(tmp_path / "recipe.yaml"),
           "--train-dir", str(data), "--model", str(model), "--out", str(tmp_path / "out"),
           "--result", str(tmp_path / "result.json"), "--max-steps", "4"]
    res = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    text = res.stdout + res.stderr
    assert res.returncode == 1, text[-3000:]
    line = next((ln for ln in text.splitlines() if "DiskFullError: no space left" in ln), "")
    assert line, text[-4000:]
    assert f"{small_fs}/work/checkpoints/grpo-sif-" in line and "more is needed to finish" in line, line
    ckpts = {int(p.name.split("-")[1]): (p / MARKER).is_file()
             for p in (small_fs / "work" / "checkpoints").glob("*/checkpoint-*")}
    cut = max(ckpts)  # the one the disk filled during: no marker, so never resumed from
    assert ckpts[cut] is False and all(ckpts[s] for s in ckpts if s != cut) and cut - 1 in ckpts, ckpts

    subprocess.run(["mount", "-o", "remount,size=32m", str(small_fs)], check=True)  # space freed
    res = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert f"resuming at step {cut - 1} of 4" in res.stderr
    assert [int(r["step"]) for r in json.loads((tmp_path / "result.json").read_text())["history"]] == [1, 2, 3, 4]
    print(f"disk full at checkpoint-{cut}: {line.split('DiskFullError: ')[1]}")
