"""One process per GPU: `run_sft` / `run_grpo` relaunch themselves under torchrun on multi-GPU machines.

A pipeline step calls the stage function once (docs: pipelines/README.md, "Multi-GPU steps"). When more
than one GPU is visible and the process is not already part of a distributed launch, the stage starts
`python -m torch.distributed.run --nproc_per_node N -m sifthinker.training.launch STAGE ...`, waits, and
returns the `TrainResult` that rank 0 wrote. Inside the launch, the same function runs on every rank
(DeepSpeed from `sft.deepspeed` / `grpo.deepspeed` when set, DDP otherwise); only rank 0 talks to MLflow
and writes the final model folder.

`SIFTHINKER_NPROC` overrides the process count (e.g. 1 to stay single-process, or 2 to exercise the
launcher on a CPU with the gloo backend).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sifthinker.config import RunConfig
from sifthinker.training.common import TrainResult

log = logging.getLogger(__name__)

STAGES = ("sft", "grpo")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def in_distributed_launch() -> bool:
    return "LOCAL_RANK" in os.environ or world_size() > 1


def processes_to_launch() -> int:
    """How many processes the stage should launch (0 = run here, in this process)."""
    if in_distributed_launch():
        return 0
    if want := os.environ.get("SIFTHINKER_NPROC"):
        n = int(want)
    else:
        import torch

        # TRL's GRPOTrainer refuses nn.DataParallel, which one process with several GPUs would use.
        n = torch.cuda.device_count()
    return n if n > 1 else 0


def launch(stage: str, cfg: RunConfig, train_dir: Path, model_dir: Path | str, out_dir: Path, nproc: int,
           max_steps: int | None = None) -> TrainResult:
    """Run `stage` on `nproc` processes with torchrun; returns rank 0's result."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    with tempfile.TemporaryDirectory(prefix=f"launch-{stage}-") as tmp:
        recipe, result = Path(tmp) / "recipe.yaml", Path(tmp) / "result.json"
        recipe.write_text(cfg.to_yaml())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "sifthinker.training.launch", stage, "--recipe", str(recipe),
               "--train-dir", str(Path(train_dir).resolve()), "--model", str(model_dir),
               "--out", str(Path(out_dir).resolve()), "--result", str(result)]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        # The workers must resolve the recipe's relative paths (cache, progress store) to the same places.
        env = {**os.environ, "SIFTHINKER_WORK_DIR": str(cfg.work_path)}
        log.info("launching %s on %d processes: %s", stage, nproc, " ".join(cmd))
        subprocess.run(cmd, check=True, env=env)
        data = json.loads(result.read_text())
    return TrainResult(output_dir=Path(data["output_dir"]), metrics=data["metrics"], history=data["history"],
                       mlflow_run_id=data["mlflow_run_id"])


def main(argv: list[str] | None = None) -> int:
    """Worker entry point (one per rank); rank 0 writes the TrainResult as JSON to --result."""
    p = argparse.ArgumentParser(prog="python -m sifthinker.training.launch")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--recipe", required=True)
    p.add_argument("--train-dir", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--max-steps", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING)
    cfg = RunConfig.load(a.recipe)
    if a.stage == "sft":
        from sifthinker.training.sft import run_sft as run
    else:
        from sifthinker.training.grpo import run_grpo as run
    res = run(cfg, Path(a.train_dir), a.model, Path(a.out), max_steps=a.max_steps)
    if is_main_process():
        out = dataclasses.asdict(res)
        out["output_dir"] = str(res.output_dir)
        Path(a.result).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
