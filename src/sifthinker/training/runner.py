"""The one skeleton both training stages share, and the one dispatcher that runs them.

A training stage (:data:`sifthinker.training.sft.SFT`, :data:`sifthinker.training.grpo.GRPO`) says only
what differs: which records, which dataset, which TRL trainer, which metrics to summarise. Everything
else is here, once: dispatching to several processes (:func:`run_stage`), loading the model through
the same code path as any Qwen2.5-VL, the stage's MLflow run on rank 0, per-step metrics and progress,
saving the merged model, and the result.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Stage
from sifthinker.storage.disk_space import is_disk_full
from sifthinker.training.callbacks import MetricsCallback
from sifthinker.training.checkpoints import CheckpointCallback, CheckpointPlan
from sifthinker.training.common import TrainResult, train_and_save
from sifthinker.training.datasets import load_records
from sifthinker.training.deepspeed_config import init_deepspeed_comm
from sifthinker.training.launch import launch
from sifthinker.training.metrics_sender import MetricsSender, TrackingOutageCallback
from sifthinker.training.preemption_callback import PreemptionCallback
from sifthinker.training.ranks import in_distributed_launch, is_main_process, processes_to_launch, world_size

log = logging.getLogger(__name__)


class TrainingStage:
    """What a training stage defines; :func:`run_in_process` does the rest."""

    name: Stage

    def select(self, cfg: RunConfig, records: list[dict]) -> list[dict]:
        """The records this stage trains on (all by default)."""
        return records

    def dataset(self, cfg: RunConfig, records: list[dict], root: Path) -> Any:
        raise NotImplementedError

    def deepspeed(self, cfg: RunConfig) -> str | None:
        """The recipe's DeepSpeed config path for this stage (None: plain DDP / one process)."""
        return None

    def checkpoint_plan(self, cfg: RunConfig, run: dict[str, Any]) -> CheckpointPlan | None:
        """How this stage checkpoints (``run``: what identifies the stage run); None: it does not (then a
        SIGTERM kills it like SIGKILL would)."""
        return None

    def params(self, cfg: RunConfig, model: Any, records: list[dict]) -> dict[str, Any]:
        """Stage-specific MLflow params (the recipe section, counts)."""
        raise NotImplementedError

    def trainer(self, cfg: RunConfig, model: Any, processor: Any, dataset: Any, work_dir: str,
                callbacks: list[Any], overrides: dict[str, Any]) -> tuple[Any, list[str]]:
        """The TRL trainer, and the logged metric keys whose first and final values the result reports."""
        raise NotImplementedError

    def extra_metrics(self, history: list[dict[str, float]]) -> dict[str, float]:
        return {}


@contextlib.contextmanager
def _stage_run(cfg: RunConfig, stage: Stage, params: dict[str, Any]) -> Iterator[str | None]:
    """The stage's MLflow run on rank 0 (yields its id); nothing on the other ranks (yields None)."""
    from sifthinker.registry import tracking

    if not is_main_process():
        yield None
        return
    with tracking.stage_run(cfg, stage, params) as run:
        yield run.info.run_id


def run_stage(stage: TrainingStage, cfg: RunConfig, train_dir: Path | str, model_dir: Path | str,
              out_dir: Path | str, max_steps: int | None = None) -> TrainResult:
    """Train ``stage`` from ``model_dir`` on ``train_dir``'s records; save the merged model to ``out_dir``.

    With several GPUs this process starts one worker per GPU (:mod:`sifthinker.training.launch`) and
    returns rank 0's result; otherwise it trains here. ``max_steps`` (tests, smoke runs) caps the steps.
    With ``platform.nodes > 1`` or ``platform.train_job.enabled`` it trains as a Kubeflow TrainJob instead.
    """
    # -- TrainJob dispatch (sifthinker.training.trainjob): multi-node training runs in the Trainer's pods, not here.
    if cfg.platform.uses_train_job:
        from sifthinker.training.trainjob import run_as_trainjob

        return run_as_trainjob(stage.name, cfg, Path(train_dir), model_dir, Path(out_dir), max_steps=max_steps)
    # -- end of TrainJob dispatch
    if nproc := processes_to_launch():
        return launch(stage.name, cfg, Path(train_dir), model_dir, Path(out_dir), nproc, max_steps=max_steps)
    return run_in_process(stage, cfg, Path(train_dir), model_dir, Path(out_dir), max_steps=max_steps)


def _resume_point(plan: CheckpointPlan) -> Path | None:
    """The checkpoint to resume from, fetched (S3) and with its state files restored, or None.

    Runs before the model loads and before the progress store opens. Under a distributed launch the
    node's first process fetches, rank 0 restores (it alone owns the store), and everyone waits for them.
    """
    state = None
    if in_distributed_launch():
        from accelerate import PartialState

        state = PartialState()  # the process group the trainer would start anyway; here for the barrier
    if state is None or state.is_local_main_process:
        fetched = plan.fetch()
        if fetched is not None and is_main_process():
            plan.restore_state(fetched)
    if state is not None:
        state.wait_for_everyone()
    return plan.latest_local()


def _disk_full(e: BaseException, plan: CheckpointPlan, model: Any) -> Exception:
    """A full disk while checkpointing (or saving the model): one line with the folder and the space a
    checkpoint takes (the last complete one's size; else weights + two Adam moments). The checkpoint cut
    short has no marker, so the rerun resumes from the one before."""
    from sifthinker.storage.disk_space import disk_full, folder_bytes

    last = plan.latest_local()
    need = folder_bytes(last) if last is not None else 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    filename = getattr(e, "filename", None)
    where = Path(filename).parent if filename else plan.local_dir
    return disk_full(e, where, need, "checkpoints (grpo.checkpoint_dir)")


def run_in_process(stage: TrainingStage, cfg: RunConfig, train_dir: Path, model_dir: Path | str, out_dir: Path,
                   max_steps: int | None = None) -> TrainResult:
    """Train ``stage`` in this process (a single process, or one rank of a distributed launch).

    With checkpoints on (``stage.checkpoint_plan``) a rerun of the same stage run resumes from the
    latest complete checkpoint; after success the run's checkpoints are deleted.
    """
    from sifthinker.model.loading import load_model

    records = stage.select(cfg, load_records(train_dir))
    dataset = stage.dataset(cfg, records, train_dir)
    plan = stage.checkpoint_plan(cfg, {"train_dir": str(Path(train_dir).resolve()), "model_dir": str(model_dir),
                                       "out_dir": str(Path(out_dir).resolve()), "max_steps": max_steps})
    if in_distributed_launch() and stage.deepspeed(cfg):
        init_deepspeed_comm()  # before anything starts the process group or loads a model
    resume = _resume_point(plan) if plan is not None else None
    if resume is not None:
        log.info("%s: resuming from %s", stage.name, resume)
    model, processor = load_model(model_dir, cfg, for_training=True)
    params = {**stage.params(cfg, model, records), "model_dir": str(model_dir), "train_dir": str(train_dir),
              "num_records": len(records), "model.freeze_vision": cfg.model.freeze_vision,
              "resumed_from": resume.name if resume else "", "world_size": world_size()}
    work = str(plan.local_dir) if plan is not None else tempfile.mkdtemp(prefix=f"{stage.name}-")
    callback = MetricsCallback(stage.name)
    # Preemption after the checkpoint callback: the checkpoint is complete before the process leaves.
    callbacks: list[Any] = [callback] + ([CheckpointCallback(plan), PreemptionCallback(stage.name)]
                                    if plan is not None else [])
    try:
        overrides: dict[str, Any] = {"max_steps": max_steps} if max_steps else {}
        overrides |= plan.trainer_args() if plan is not None else {}
        with _stage_run(cfg, stage.name, params) as run_id:
            callback.sender = MetricsSender(run_id) if run_id else None
            # after the checkpoint callback: a tracking outage past the bound fails the step once it is saved
            callbacks.append(TrackingOutageCallback(stage.name, callback.sender, cfg.registry.tracking_outage_s,
                                                    cfg.tracking_uri))
            trainer, keys = stage.trainer(cfg, model, processor, dataset, work, callbacks, overrides)
            try:
                metrics = train_and_save(trainer, processor, model_dir, out_dir, callback.history, callback.summary,
                                         keys, extra=stage.extra_metrics, resume_from=resume,
                                         tracking_retry_s=cfg.registry.tracking_outage_s)
            except Exception as e:
                if plan is None or not is_disk_full(e):
                    raise
                raise _disk_full(e, plan, model) from e
            finally:
                if callback.sender is not None:
                    callback.sender.close()
    finally:
        if plan is None:
            shutil.rmtree(work, ignore_errors=True)
    if plan is not None and is_main_process():
        plan.finish()  # the model is saved: the checkpoints have done their job
    log.info("%s done in %.0fs: %s", stage.name, metrics["train_seconds"],
             {k: round(v, 4) for k, v in metrics.items()})
    return TrainResult(output_dir=out_dir, metrics=metrics, history=callback.history, mlflow_run_id=run_id,
                       stage=stage.name)
