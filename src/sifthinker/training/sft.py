"""SFT warm-up (spec section 3) with TRL's SFTTrainer: the SIF traces, two images, assistant-only loss.

The recipe's `sft` section sets the hyper-parameters; `sft.lora` switches to LoRA (the paper: r=8,
alpha=16 on the language model's linear layers), merged into the saved model. The vision tower and
projector stay frozen when `model.freeze_vision` (the paper's setting).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sifthinker.config import RunConfig
from sifthinker.training.callbacks import MetricsCallback
from sifthinker.training.common import (
    TrainResult,
    device_flags,
    peft_config,
    stage_context,
    train_and_save,
)
from sifthinker.training.datasets import load_records, sft_dataset
from sifthinker.training.launch import launch, processes_to_launch

log = logging.getLogger(__name__)


def sft_args(cfg: RunConfig, output_dir: str, **overrides: Any) -> Any:
    """TRL SFTConfig from the recipe (device flags decided here, not in the recipe)."""
    from trl import SFTConfig

    s = cfg.sft
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": s.epochs,
        "learning_rate": s.learning_rate,
        "per_device_train_batch_size": s.per_device_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "max_length": s.max_length,
        "warmup_steps": s.warmup_ratio,  # transformers 5: a value < 1 is a fraction of the training steps
        "lr_scheduler_type": s.lr_scheduler,
        "logging_steps": s.logging_steps,
        "logging_first_step": True,
        "save_strategy": "no",
        "report_to": [],  # MetricsCallback logs into the stage's MLflow run
        "assistant_only_loss": True,  # the paper trains on the assistant turn only
        "dataloader_num_workers": 0,
        "disable_tqdm": True,  # MetricsCallback prints one line per logging step instead
        "seed": cfg.data.seed,
        "deepspeed": s.deepspeed,
        **device_flags(),
    }
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def run_sft(cfg: RunConfig, train_dir: Path, base_model_dir: Path | str, out_dir: Path,
            max_steps: int | None = None) -> TrainResult:
    """Fine-tune `base_model_dir` on the records in `train_dir`; save model + processor to `out_dir`.

    Logs params, per-step metrics and the saved model (artifacts under `model/`) to the MLflow run of
    stage "sft". `max_steps` (tests, smoke runs) caps the number of optimiser steps. With several GPUs
    it relaunches itself with one process per GPU (`training.launch`; DeepSpeed when `sft.deepspeed`).
    """
    from trl import SFTTrainer

    from sifthinker.model.loading import load_model

    if nproc := processes_to_launch():
        return launch("sft", cfg, train_dir, base_model_dir, out_dir, nproc, max_steps=max_steps)
    train_dir, out_dir = Path(train_dir), Path(out_dir)
    records = load_records(train_dir)
    dataset = sft_dataset(records, train_dir)
    model, processor = load_model(base_model_dir, cfg, for_training=True)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = {**{f"sft.{k}": v for k, v in asdict(cfg.sft).items()},
              "base_model": str(base_model_dir), "train_dir": str(train_dir), "num_records": len(records),
              "model.freeze_vision": cfg.model.freeze_vision, "model.max_pixels": cfg.model.max_pixels,
              "trainable_params_before_lora": n_trainable}
    work = tempfile.mkdtemp(prefix="sft-")
    callback = MetricsCallback("sft")
    try:
        overrides = {"max_steps": max_steps} if max_steps else {}
        args = sft_args(cfg, work, **overrides)
        with stage_context(cfg, "sft", params) as run_id:
            trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                                 peft_config=peft_config(cfg.sft.lora), callbacks=[callback])
            metrics = train_and_save(trainer, processor, base_model_dir, out_dir, callback.history,
                                     callback.summary, ["loss", "mean_token_accuracy"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("SFT done in %.0fs: %s", metrics["train_seconds"], {k: round(v, 4) for k, v in metrics.items()})
    return TrainResult(output_dir=out_dir, metrics=metrics, history=callback.history, mlflow_run_id=run_id)

