"""One process per GPU: a training stage relaunches itself under torchrun on a multi-GPU machine.

A pipeline step calls the stage function once (docs: pipelines/README.md, "Multi-GPU steps"). When more
than one GPU is visible and the process is not already part of a distributed launch
(:func:`sifthinker.training.ranks.processes_to_launch`), :func:`sifthinker.training.runner.run_stage`
calls :func:`launch`, which starts ``python -m torch.distributed.run --nproc_per_node N -m
sifthinker.training.worker STAGE ...``, waits, and returns the ``TrainResult`` that rank 0 wrote. Inside
the launch the same stage runs on every rank (DeepSpeed from ``sft.deepspeed`` / ``grpo.deepspeed`` when
set, DDP otherwise); only rank 0 talks to MLflow and writes the final model folder.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sifthinker.config.run_config import RunConfig
from sifthinker.names import TRAINING_STAGES, Env
from sifthinker.training.common import TrainResult
from sifthinker.training.deepspeed_config import cpu_env
from sifthinker.training.preemption import Preempted, forwarding_sigterm, torchrun_shutdown_env

log = logging.getLogger(__name__)

WORKER_MODULE = "sifthinker.training.worker"


def device_env() -> dict[str, str]:
    """What the workers' environment needs for this machine: DeepSpeed's CPU accelerator without CUDA."""
    import torch

    return {} if torch.cuda.is_available() else cpu_env()


def launch(stage: str, cfg: RunConfig, train_dir: Path, model_dir: Path | str, out_dir: Path, nproc: int,
           max_steps: int | None = None) -> TrainResult:
    """Run training stage ``stage`` (``sft`` or ``grpo-sif``) on ``nproc`` processes; rank 0's result."""
    if stage not in TRAINING_STAGES:
        raise ValueError(f"unknown training stage {stage!r}; expected one of {TRAINING_STAGES}")
    with tempfile.TemporaryDirectory(prefix=f"launch-{stage}-") as tmp:
        recipe, result = Path(tmp) / "recipe.yaml", Path(tmp) / "result.json"
        recipe.write_text(cfg.to_yaml())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", WORKER_MODULE, str(stage), "--recipe", str(recipe),
               "--train-dir", str(Path(train_dir).resolve()), "--model", str(model_dir),
               "--out", str(Path(out_dir).resolve()), "--result", str(result)]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        # The workers must resolve the recipe's relative paths (cache, progress store) to the same places.
        env = {**os.environ, Env.WORK_DIR.value: str(cfg.work_path), **device_env(),
               **torchrun_shutdown_env(cfg.platform.termination_grace_seconds)}
        log.info("launching %s on %d processes: %s", stage, nproc, " ".join(cmd))
        proc = subprocess.Popen(cmd, env=env)
        with forwarding_sigterm(proc) as preempted:  # the ranks checkpoint; torchrun then exits non-zero
            rc = proc.wait()
        if preempted[0] and rc:
            err = Preempted(f"{nproc} rank(s) of {stage} stopped (exit {rc}) after their checkpoint")
            print(f"[{stage}] {err}", file=sys.stderr, flush=True)  # SystemExit(75) itself prints nothing
            raise err
        if rc:
            raise subprocess.CalledProcessError(rc, cmd)
        data = json.loads(result.read_text())
    return TrainResult(output_dir=Path(data["output_dir"]), metrics=data["metrics"], history=data["history"],
                       mlflow_run_id=data["mlflow_run_id"], stage=stage)
