"""Preemption: a real SIGTERM to a training process (SFT, GRPO-SIF) mid-run, as a drained node or a reclaimed
spot GPU sends it. The step under way finishes, a complete checkpoint is written, the process exits
PREEMPTED_EXIT_CODE (KFP's retry / the TrainJob's restart policy reruns it), and the same command started
again resumes from that checkpoint with the step counter running on.

Each run is the per-rank entry point (``python -m sifthinker.training.worker``) on the tiny model, one
thread, in its own process; the signal goes to that process only (what the kubelet does to a container's
main process; under torchrun the agent forwards it to every rank).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")

from helpers import FAULTS, gpu_trainjob, make_cfg, subprocess_env  # noqa: E402

from sifthinker.training.checkpoints import MARKER  # noqa: E402
from sifthinker.training.preemption import PREEMPTED_EXIT_CODE  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# Opt-in: each of these trains the tiny model two or three times in subprocesses (minutes on 2 cores), more
# than `make test`'s budget allows. `make test-faults` runs them.


def _command(stage: str, root: Path, data_dir: Path, model: Path, steps: int, torchrun: bool = False) -> list[str]:
    cfg = make_cfg(root)
    cfg.sft.logging_steps, cfg.sft.per_device_batch_size, cfg.sft.epochs = 1, 1, 10
    g = cfg.grpo
    g.num_items, g.num_generations, g.per_device_batch_size, g.max_completion_length = 4, 2, 2, 24
    g.epochs, g.save_steps, g.sample_steps, g.logging_steps = 10, 0, 0, 1  # no periodic checkpoints at all
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(cfg.to_yaml())
    if torchrun:  # the launcher a multi-GPU step runs: torchrun, one rank here (the CPU's gloo)
        code = ("import sys; from pathlib import Path; from sifthinker.config.run_config import RunConfig; "
                "from sifthinker.training.launch import launch; "
                "launch(sys.argv[1], RunConfig.load(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]), "
                "1, max_steps=int(sys.argv[6]))")
        return [sys.executable, "-c", code, stage, str(root / "recipe.yaml"), str(data_dir), str(model),
                str(root / "model"), str(steps)]
    return [sys.executable, "-m", "sifthinker.training.worker", stage, "--recipe", str(root / "recipe.yaml"),
            "--train-dir", str(data_dir), "--model", str(model), "--out", str(root / "model"),
            "--result", str(root / "result.json"), "--max-steps", str(steps)]


def _logged_steps(log: Path, stage: str) -> list[int]:
    return [int(line.split(" step ")[1].split("/")[0]) for line in log.read_text().splitlines()
            if line.startswith(f"[{stage}] step ")]


def _preempt_and_resume(stage: str, root: Path, data_dir: Path, model: Path, steps: int,
                        torchrun: bool = False) -> dict:
    cmd, log = _command(stage, root, data_dir, model, steps, torchrun), root / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while len(_logged_steps(log, stage)) < 2:  # signalled in the middle of the run, after step 2 was logged
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    seen = max(_logged_steps(log, stage))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(300)
    exit_s = time.monotonic() - t0
    text = log.read_text()
    assert rc == PREEMPTED_EXIT_CODE, text[-3000:]
    ckpts = list((root / "work" / "checkpoints").glob(f"{stage}-*/checkpoint-*"))
    assert len(ckpts) == 1 and (ckpts[0] / MARKER).is_file(), ckpts
    saved = int(ckpts[0].name.split("-")[1])
    assert json.loads((ckpts[0] / MARKER).read_text())["step"] == saved
    # The step under way when the signal came was finished (not thrown away), then nothing more.
    assert seen <= saved <= seen + 1 and max(_logged_steps(log, stage)) == saved, (seen, saved)
    assert f"preempted (SIGTERM): checkpoint at step {saved}" in text
    if torchrun:
        assert "1 rank(s) of sft stopped" in text
    assert not (root / "result.json").exists() and not (root / "model" / "model.safetensors").exists()

    t1 = time.monotonic()
    with log.open("a") as out:  # the retry: the same command
        assert subprocess.run(cmd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode == 0, \
            log.read_text()[-3000:]
    rerun_s = time.monotonic() - t1
    assert f"[{stage}] resuming at step {saved} of {steps}" in log.read_text()
    if not torchrun:  # (the launcher keeps rank 0's result in a temporary folder)
        result = json.loads((root / "result.json").read_text())
        assert [int(r["step"]) for r in result["history"]] == list(range(1, steps + 1))  # the counter ran on
    assert _logged_steps(log, stage)[-(steps - saved):] == list(range(saved + 1, steps + 1))
    assert (root / "model" / "model.safetensors").is_file()
    assert list((root / "work" / "checkpoints").glob(f"{stage}-*/checkpoint-*")) == []  # done: removed
    print(f"{stage}: SIGTERM after step {seen}, checkpoint-{saved}, exit {exit_s:.1f}s after the signal; "
          f"rerun {rerun_s:.1f}s for {steps - saved} steps; lost 0 steps")
    return {"seen": seen, "saved": saved, "exit_s": exit_s, "rerun_s": rerun_s}


@FAULTS
@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_during_sft_checkpoints_exits_75_and_the_rerun_resumes(data_dir, base_model, tmp_path):
    straight = tmp_path / "straight"
    cmd = _command("sft", straight, data_dir, base_model, 8)
    with (straight / "log.txt").open("w") as out:  # uninterrupted, alongside (one thread each)
        straight_proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
    _preempt_and_resume("sft", tmp_path / "sft", data_dir, base_model, steps=8)
    assert straight_proc.wait(900) == 0, (straight / "log.txt").read_text()[-3000:]
    # Nothing lost: the preempted-and-resumed run ends where the uninterrupted one does (same arithmetic
    # on this CPU; 1e-5 allows a different summation order, far below one optimizer step's change).
    a, b = (json.loads((d / "result.json").read_text()) for d in (straight, tmp_path / "sft"))
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5), ra["step"]
    from safetensors.torch import load_file

    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (straight, tmp_path / "sft"))
    assert wa.keys() == wb.keys() and max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-5


@FAULTS
@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_during_grpo_checkpoints_exits_75_and_the_rerun_resumes(data_dir, base_model, tmp_path):
    _preempt_and_resume("grpo-sif", tmp_path / "grpo", data_dir, base_model, steps=6)


@FAULTS
@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_to_the_launcher_reaches_the_rank_under_torchrun(data_dir, base_model, tmp_path):
    """The launcher (what a multi-GPU step runs) gets the signal, as a pod's main process does; torchrun
    passes it to the rank, which checkpoints; the launcher exits 75 and its rerun resumes."""
    _preempt_and_resume("sft", tmp_path / "torchrun", data_dir, base_model, steps=8, torchrun=True)


def test_the_trainjob_gives_its_pods_the_recipes_grace_period(tmp_path):
    """platform.termination_grace_seconds reaches the pods (SIGTERM -> SIGKILL) and torchrun (how long it
    waits for the ranks' checkpoint after forwarding SIGTERM, a margin less, so that it still reports)."""
    job = gpu_trainjob(tmp_path)  # the 2-node 7B recipe: 900 s
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert patch["template"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 900
    assert {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": "885"} in job["spec"]["trainer"]["env"]
