"""Full disk: the build's output folder on a real size-limited filesystem (a tmpfs mounted for the test;
skipped where mounting is not permitted). The build fails with one line naming the folder, the free space
and the space still needed; nothing half-written is marked finished; after space is freed (the tmpfs grown)
the same command resumes from the finished shards and ends with an uninterrupted build's bytes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_data_build import _cli, done, snapshot

REPO = Path(__file__).resolve().parents[1]


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
    subprocess.run(_cli(*common, "--out", str(ref)), env=env, check=True, capture_output=True)

    out = small_fs / "d"
    res = subprocess.run(_cli(*common, "--out", str(out)), env=env, capture_output=True, text=True)
    err = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1 and err.startswith(f"Error: no space left on the filesystem of {small_fs}/.d.partial")
    assert "free of 1.0 MiB" in err and "more is needed to finish" in err and "Traceback" not in res.stderr
    shards = small_fs / ".d.partial" / "shards"
    finished = done(shards)
    assert not out.exists() and 1 <= len(finished) < 10  # no dataset published
    assert [p.name for p in shards.iterdir() if p.name not in finished] == []  # no half-written shard left

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)  # space freed
    res = subprocess.run(_cli(*common, "--out", str(out)), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} resumed" in res.stdout and snapshot(out) == snapshot(ref)
    print(f"disk full after {len(finished)} of 10 shards: {err[7:]}")
