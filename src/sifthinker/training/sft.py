"""SFT warm-up (spec section 3) with TRL's SFTTrainer: the SIF traces, two images, assistant-only loss.

The recipe's `sft` section sets the hyper-parameters; `sft.lora` switches to LoRA (the paper: r=8,
alpha=16 on the language model's linear layers), merged into the saved model. The vision tower and
projector stay frozen when `model.freeze_vision` (the paper's setting).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Stage
from sifthinker.training.checkpoints import CheckpointPlan, run_key
from sifthinker.training.common import TrainResult, device_flags, peft_config, with_checkpoint_loading
from sifthinker.training.datasets import sft_dataset
from sifthinker.training.deepspeed_config import deepspeed_config
from sifthinker.training.preflight import preflight
from sifthinker.training.runner import TrainingStage, run_stage


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
        "deepspeed": deepspeed_config(s.deepspeed) if s.deepspeed else None,
        **device_flags(),
    }
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


class SFTStage(TrainingStage):
    name = Stage.SFT

    def deepspeed(self, cfg: RunConfig) -> str | None:
        return cfg.sft.deepspeed

    def dataset(self, cfg: RunConfig, records: list[dict], root: Path) -> Any:
        return sft_dataset(records, root)

    def params(self, cfg: RunConfig, model: Any, records: list[dict]) -> dict[str, Any]:
        return {**{f"sft.{k}": v for k, v in asdict(cfg.sft).items()}, "model.max_pixels": cfg.model.max_pixels,
                "trainable_params_before_lora": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def checkpoint_plan(self, cfg: RunConfig, run: dict[str, Any]) -> CheckpointPlan | None:
        # No periodic saves (an SFT run is short); a checkpoint only when preempted (SIGTERM), in the same
        # folder as GRPO's, so that the retried step resumes (sifthinker.training.preemption).
        key = run_key(self.name, {**run, "sft": cfg.sft, "model": cfg.model, "seed": cfg.data.seed})
        return CheckpointPlan.for_run(cfg.grpo.checkpoint_dir, cfg.work_path, key, 0, 1, {})

    def trainer(self, cfg, model, processor, dataset, work_dir, callbacks, overrides):
        from trl import SFTTrainer

        trainer = with_checkpoint_loading(SFTTrainer)(model=model, args=sft_args(cfg, work_dir, **overrides), train_dataset=dataset,
                             processing_class=processor, peft_config=peft_config(cfg.sft.lora), callbacks=callbacks)
        return trainer, ["loss", "mean_token_accuracy"]


SFT = SFTStage()


def run_sft(cfg: RunConfig, train_dir: Path, base_model_dir: Path | str, out_dir: Path,
            max_steps: int | None = None) -> TrainResult:
    """Fine-tune `base_model_dir` on the records in `train_dir`; save model + processor to `out_dir`.

    Checks the recipe, the data and the base model first and stops before loading anything when one is
    unusable (:func:`sifthinker.training.preflight.preflight`). Logs params, per-step metrics and the
    saved model (artifacts under `model/`) to the MLflow run of stage "sft"; see
    :func:`sifthinker.training.runner.run_stage`.
    """
    preflight(SFT.name, cfg, train_dir, base_model_dir)
    return run_stage(SFT, cfg, train_dir, base_model_dir, out_dir, max_steps=max_steps)
