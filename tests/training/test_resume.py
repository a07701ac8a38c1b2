"""Checkpoints and resuming: a GRPO run killed with SIGKILL and started again continues where its last
checkpoint left off, and ends where an uninterrupted run ends.

The runs are real: the tiny Qwen2.5-VL, TRL's GRPOTrainer, the four rewards and the SQLite progress
store, each in its own process (``python -m sifthinker.training.worker``, the per-rank entry point).

Tolerance: the resumed run restores weights, optimizer, scheduler, the RNG states (so rollouts sample
the same tokens), the step counter, the epoch's prompt order and the progress store, so on this CPU it
repeats the uninterrupted run's arithmetic exactly. The test still allows 1e-5 (absolute, on rewards,
losses and every weight): enough for a summation order that a different thread count could change,
far below what one different rollout or optimizer step would change (the per-step reward moves by
>= 1e-2 with a learning rate of 1e-3 on this model).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")

from helpers import make_cfg  # noqa: E402

from sifthinker.rewards.progress import SQLiteProgressStore  # noqa: E402
from sifthinker.training.checkpoints import MARKER, CheckpointPlan, run_key  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5


@pytest.fixture(scope="module")
def base_model(data_dir, tmp_path_factory) -> Path:
    """The tiny model after a short SFT on the fixture traces: its rollouts earn rewards that differ
    within a group (a random model's all score 0, so GRPO would have nothing to learn from)."""
    from sifthinker.model import build_tiny_model, corpus_from_records
    from sifthinker.training.datasets import load_records
    from sifthinker.training.sft import run_sft

    root = tmp_path_factory.mktemp("resume-sft")
    cfg = make_cfg(root)
    base = build_tiny_model(cfg, root / "base", list(corpus_from_records(load_records(data_dir))))
    cfg.sft.learning_rate, cfg.sft.epochs, cfg.sft.per_device_batch_size, cfg.sft.warmup_ratio = 1e-2, 40, 2, 0.0
    cfg.sft.logging_steps = 40
    os.environ.pop("SIFTHINKER_WORK_DIR", None)
    return run_sft(cfg, data_dir, base, root / "sft").output_dir


def _recipe(root: Path) -> Path:
    cfg = make_cfg(root)
    g = cfg.grpo
    g.num_items, g.num_generations, g.per_device_batch_size = 4, 4, 8  # 2 prompts per step, 2 steps per epoch
    g.max_completion_length, g.learning_rate, g.epochs = 128, 1e-3, 3  # a whole fixture trace is ~90 tokens
    g.save_steps, g.sample_steps = 3, 0  # checkpoint-3 lies in the middle of the second epoch
    root.mkdir(parents=True, exist_ok=True)
    path = root / "recipe.yaml"
    path.write_text(cfg.to_yaml())
    return path


def _command(root: Path, data_dir: Path, base_model: Path) -> list[str]:
    return [sys.executable, "-m", "sifthinker.training.worker", "grpo-sif", "--recipe", str(_recipe(root)),
            "--train-dir", str(data_dir), "--model", str(base_model), "--out", str(root / "model"),
            "--result", str(root / "result.json"), "--max-steps", "6"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIFTHINKER_WORK_DIR", "MLFLOW_TRACKING_URI")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src"), "SIFTHINKER_TORCH_THREADS": "1"}


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        proc = subprocess.run(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _store(root: Path) -> dict[str, tuple[float, int]]:
    store = SQLiteProgressStore(root / "work" / "progress.sqlite")
    rows = store._connect().execute("SELECT key, value, visits FROM progress").fetchall()
    return {k: (v, n) for k, v, n in rows}


@pytest.mark.slow
def test_sigkill_and_restart_resumes_and_matches_an_uninterrupted_run(data_dir, base_model, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run goes alongside the one that gets killed (one thread each: 2 cores, half the wall time).
    straight_cmd = _command(straight, data_dir, base_model)
    with (straight / "log.txt").open("w") as out:
        straight_proc = subprocess.Popen(straight_cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)

    cmd = _command(killed, data_dir, base_model)
    log = killed / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list((killed / "work" / "checkpoints").glob(f"*/checkpoint-3/{MARKER}")):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up: a node lost, an OOM kill
    assert proc.wait(30) == -signal.SIGKILL
    assert not (killed / "result.json").exists() and not (killed / "model" / "model.safetensors").exists()

    _run(cmd, log)  # started again, the same command
    assert straight_proc.wait(900) == 0, (straight / "log.txt").read_text()[-3000:]
    assert "resuming at step 3 of 6" in log.read_text()
    a, b = (json.loads((d / "result.json").read_text()) for d in (straight, killed))
    # The step counter continued: steps 1-3 replayed from the checkpoint's history, 4-6 trained again.
    assert [row["step"] for row in b["history"]] == [row["step"] for row in a["history"]] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a["history"], b["history"], strict=True):
        for key in ("reward", "loss", "kl", "rewards/format_reward/mean", "rewards/answer_reward/mean"):
            assert rb[key] == pytest.approx(ra[key], abs=TOL), (ra["step"], key)
    for key in ("final_reward", "final_loss", "reward_first_half", "reward_second_half", "train_loss"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=TOL), key
    wa, wb = _weights(straight / "model"), _weights(killed / "model")
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= TOL
    # It did train: some groups' rewards differed, and the weights moved.
    assert min(row["frac_reward_zero_std"] for row in a["history"]) < 1
    assert (wa["lm_head.weight"] != _weights(base_model)["lm_head.weight"]).any()
    # The progress store came back from the checkpoint: same values, same visit counts (3 epochs x 4 items).
    sa, sb = _store(straight), _store(killed)
    assert sa.keys() == sb.keys() and len(sa) == 4 and {n for _, n in sa.values()} == {3}
    assert all(sb[k][0] == pytest.approx(sa[k][0], abs=TOL) and sb[k][1] == sa[k][1] for k in sa)
    # A successful run removes its checkpoints.
    assert list((killed / "work" / "checkpoints").glob("*/checkpoint-*")) == []


# ---- checkpoint folders, without training -----------------------------------------------------------------


def test_run_key_separates_runs_and_is_stable():
    a = run_key("grpo-sif", {"out_dir": "/x", "lr": 1e-5})
    assert a == run_key("grpo-sif", {"lr": 1e-5, "out_dir": "/x"}) and a.startswith("grpo-sif-") and len(a) == 21
    assert a != run_key("grpo-sif", {"out_dir": "/y", "lr": 1e-5}) != run_key("grpo-sif", {"out_dir": "/x", "lr": 2e-5})


def _fake_checkpoint(plan: CheckpointPlan, step: int, complete: bool = True) -> Path:
    ckpt = plan.local_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        plan.complete(ckpt, step)
    return ckpt


def test_only_complete_checkpoints_count_and_state_files_travel(tmp_path):
    live = tmp_path / "work" / "progress.sqlite"
    store = SQLiteProgressStore(live)
    store.put("k", 0.5)
    plan = CheckpointPlan.for_run("checkpoints", tmp_path / "work", "grpo-sif-abc", 2, 2, {"progress.sqlite": live})
    assert plan.local_dir == tmp_path / "work" / "checkpoints" / "grpo-sif-abc" and plan.remote is None
    _fake_checkpoint(plan, 2)
    store.put("k", 0.75)
    _fake_checkpoint(plan, 4, complete=False)  # killed while saving: no marker
    assert plan.fetch() == plan.local_dir / "checkpoint-2"
    assert not (plan.local_dir / "checkpoint-4").exists()  # removed, so the trainer never trips over it
    store.close()
    plan.restore_state(plan.local_dir / "checkpoint-2")
    assert SQLiteProgressStore(live).get("k") == 0.5
    plan.finish()
    assert not plan.local_dir.exists()


def test_s3_checkpoints_upload_prune_and_resume(moto_s3, tmp_path, monkeypatch):
    from helpers import AWS_ENV

    for k, v in {**AWS_ENV, "AWS_ENDPOINT_URL_S3": moto_s3.endpoint}.items():
        monkeypatch.setenv(k, v)
    live = tmp_path / "a" / "progress.sqlite"
    SQLiteProgressStore(live).put("k", 0.25)
    root = f"s3://{moto_s3.bucket}/runs/ckpt"
    plan = CheckpointPlan.for_run(root, tmp_path / "a", "grpo-sif-k1", 2, 2, {"progress.sqlite": live})
    assert plan.remote == f"{root}/grpo-sif-k1"
    for step in (2, 4, 6):
        _fake_checkpoint(plan, step)
    prefix = "runs/ckpt/grpo-sif-k1/"
    keys = moto_s3.keys(prefix)
    assert {k.split("/")[3] for k in keys} == {"checkpoint-4", "checkpoint-6"}  # pruned to save_total_limit
    assert f"{prefix}checkpoint-6/{MARKER}" in keys and f"{prefix}checkpoint-6/progress.sqlite" in keys
    # An upload cut short (no marker) at a later step is ignored.
    moto_s3.client().put_object(Bucket=moto_s3.bucket, Key=f"{prefix}checkpoint-8/trainer_state.json", Body=b"{}")
    # Another machine (an empty local folder) resumes from S3: it downloads checkpoint-6 with its store copy.
    other = CheckpointPlan.for_run(root, tmp_path / "b", "grpo-sif-k1", 2, 2,
                                   {"progress.sqlite": tmp_path / "b" / "progress.sqlite"})
    got = other.fetch()
    assert got == other.local_dir / "checkpoint-6" and (got / MARKER).is_file()
    other.restore_state(got)
    assert SQLiteProgressStore(tmp_path / "b" / "progress.sqlite").get("k") == 0.25
    other.finish()
    assert moto_s3.keys(prefix) == []
