"""SIGTERM (a drained node, a deleted pod) to `sifthinker data build` and `sifthinker eval run`: a real
signal to the command's own process. It stops promptly with exit 143 and one line saying what is kept, leaves
no worker process behind, and the same command then resumes and ends as an uninterrupted run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from helpers import data_build_cmd, done, half_right_endpoint, metrics_of, snapshot

from sifthinker.cli.signals import TERMINATED_EXIT_CODE

REPO = Path(__file__).resolve().parents[2]


def _stop(proc: subprocess.Popen) -> tuple[int, float, list[psutil.Process]]:
    """SIGTERM to the process alone; its exit code, the seconds it took, and its children of before."""
    children = psutil.Process(proc.pid).children(recursive=True)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    return rc, time.monotonic() - t0, children


def test_sigterm_stops_the_data_build_cleanly_and_the_rerun_resumes(tmp_path):
    run_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SIFTHINKER_WORK_DIR": str(tmp_path / "work")}
    common = ["--num", "30", "--seed", "5", "--shard-size", "3", "--width", "160", "--height", "120"]
    ref = tmp_path / "ref"
    subprocess.run(data_build_cmd(*common, "--workers", "1", "--out", str(ref)), env=run_env, check=True, capture_output=True)

    out, shards = tmp_path / "d", tmp_path / ".d.partial" / "shards"
    proc = subprocess.Popen(data_build_cmd(*common, "--workers", "2", "--out", str(out)), env=run_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not (shards.is_dir() and len(done(shards)) >= 3):
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before it could be signalled"
    rc, secs, workers = _stop(proc)
    err = proc.stderr.read()
    assert rc == TERMINATED_EXIT_CODE, err
    assert "terminated:" in err and "finished shards are kept" in err and "Traceback" not in err, err
    # the workers go with it (they may still be exiting when the parent's exit code is read: wait, do not race)
    assert workers and psutil.wait_procs(workers, timeout=120)[1] == []
    finished = done(shards)
    assert not out.exists() and 3 <= len(finished) < 10  # nothing marked finished that is not

    res = subprocess.run(data_build_cmd(*common, "--workers", "2", "--out", str(out)), env=run_env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} resumed" in res.stdout and snapshot(out) == snapshot(ref)
    print(f"data build: SIGTERM after {len(finished)} of 10 shards, exit in {secs:.1f}s, lost 0 shards")


def test_sigterm_stops_eval_run_cleanly_and_the_rerun_resumes(sif_data, env, tmp_path):  # noqa: F811
    srv = half_right_endpoint(sif_data)
    args = [sys.executable, "-m", "sifthinker.cli", "eval", "run", "--benchmark", "sif-bench", "--data",
            str(sif_data), "--endpoint", srv.url, "--recipe", str(env)]  # concurrency 3: requests in flight
    try:
        subprocess.run([*args, "--out", str(tmp_path / "whole")], check=True, capture_output=True, timeout=240)
        preds = tmp_path / "cut/predictions.jsonl"
        proc = subprocess.Popen([*args, "--out", str(tmp_path / "cut")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not preds.exists() or len(preds.read_text().splitlines()) < 1):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
        rc, secs, _ = _stop(proc)
        err = proc.stderr.read()
        assert rc == TERMINATED_EXIT_CODE, err
        assert "terminated: finished items are kept" in err and "Traceback" not in err, err
        cached = [json.loads(line)["id"] for line in preds.read_text().splitlines() if line.endswith("}")]
        assert 1 <= len(cached) < 6 and not (tmp_path / "cut/metrics.json").exists()
        res = subprocess.run([*args, "--out", str(tmp_path / "cut")], capture_output=True, text=True, timeout=240)
    finally:
        srv.close()
    assert res.returncode == 0, res.stderr
    assert f"{len(cached)} from the cache" in res.stderr
    assert metrics_of(tmp_path / "cut") == metrics_of(tmp_path / "whole")
    print(f"eval run: SIGTERM after {len(cached)} of 6 items, exit in {secs:.1f}s, lost 0 items")
