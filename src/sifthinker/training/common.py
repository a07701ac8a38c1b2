"""Shared pieces of the SFT and GRPO stages: results, device flags, LoRA, saving and MLflow artifacts."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sifthinker.config.model_config import LoraConfig
from sifthinker.registry.tracking_retry import retrying
from sifthinker.training.ranks import in_distributed_launch

log = logging.getLogger(__name__)

# Linear layers of the language model only: the spec's LoRA never touches the (frozen) vision tower or
# its projector, and PEFT's "all-linear" would. Module names as in transformers' Qwen2.5-VL.
LM_LINEAR_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class TrainResult:
    """What a training stage hands on: the saved model folder, final metrics, per-step history."""

    output_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    stage: str = ""

    def headline(self) -> str:
        """The key numbers in one line: how the loss (and GRPO's reward) moved, steps, seconds."""
        m = self.metrics
        parts = []
        # GRPO's loss hovers near 0 by construction (advantages are centred): its reward says more.
        for key in ("reward",) if "reward_first_half" in m or "first_reward" in m else ("loss",):
            if f"first_{key}" in m and f"final_{key}" in m:
                parts.append(f"{key} {m[f'first_{key}']:.3f} -> {m[f'final_{key}']:.3f}")
        if "reward_first_half" in m and "reward_second_half" in m:
            parts.append(f"mean reward by half {m['reward_first_half']:.2f} -> {m['reward_second_half']:.2f}")
        steps = max((int(row.get("step", 0)) for row in self.history), default=0)
        parts.append(f"{steps} steps")
        return ", ".join(parts)


def device_flags() -> dict[str, Any]:
    """Trainer device arguments: bf16 and activation checkpointing on CUDA (real models need the
    memory), plain float32 without checkpointing on the CPU (only the tiny model runs there)."""
    import torch

    if torch.cuda.is_available():
        return {"use_cpu": False, "bf16": True, **checkpointing(True)}
    return {"use_cpu": True, "bf16": False, **checkpointing(False)}


def checkpointing(enabled: bool) -> dict[str, bool]:
    """The activation-checkpointing switch under its name in the installed transformers.

    transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns);
    TRL defaults it to True.
    """
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def peft_config(lora: LoraConfig | None) -> Any | None:
    """A PEFT LoraConfig from the recipe's (None = full fine-tuning). "all-linear" = LM linears only."""
    if lora is None:
        return None
    from peft import LoraConfig as PeftLoraConfig

    targets = LM_LINEAR_REGEX if lora.target_modules == "all-linear" else lora.target_modules
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=targets, task_type="CAUSAL_LM")


def quiet_trainer(trainer: Any) -> None:
    """Drop transformers' printer/progress-bar callbacks: MetricsCallback prints one line per log instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def unwrap_and_merge(model: Any) -> Any:
    """The plain transformers model: a PEFT adapter is merged into the base weights first."""
    if hasattr(model, "merge_and_unload"):
        log.info("merging the LoRA adapter into the base model")
        return model.merge_and_unload()
    return model


def save_model(model: Any, processor: Any, out_dir: Path) -> Path:
    """Save a merged model and its processor as a plain `save_pretrained` folder (loadable by load_model)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # save_pretrained itself removes stale weight shards
    model = unwrap_and_merge(model)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def finalize_model(trainer: Any, processor: Any, base_dir: Path | str, out_dir: Path) -> Path:
    """Write the trained model to `out_dir` as a plain `save_pretrained` folder, adapter merged.

    In one process the model is merged in memory. Under a distributed launch (DeepSpeed ZeRO-3 shards
    the weights) every rank takes part in `trainer.save_model`, which gathers them; with LoRA, rank 0
    then merges the saved adapter into a fresh copy of the base model. ZeRO-3 configs need
    `stage3_gather_16bit_weights_on_model_save: true` for the gather.
    """
    import shutil

    out_dir = Path(out_dir)
    if not in_distributed_launch():
        return save_model(trainer.model, processor, out_dir)
    acc = trainer.accelerator
    if hasattr(trainer.model, "merge_and_unload"):
        adapter = out_dir.parent / f".{out_dir.name}-adapter"
        trainer.save_model(str(adapter))
        acc.wait_for_everyone()
        if acc.is_main_process:
            merge_saved_adapter(base_dir, adapter, out_dir)
            processor.save_pretrained(out_dir)
            shutil.rmtree(adapter, ignore_errors=True)
    else:
        trainer.save_model(str(out_dir))
        if acc.is_main_process:
            processor.save_pretrained(out_dir)
            # Trainer.save_model pickles the training arguments next to the weights; a model folder
            # that MLflow and KServe pick up must hold the model only.
            (out_dir / "training_args.bin").unlink(missing_ok=True)
    acc.wait_for_everyone()
    return out_dir


@contextlib.contextmanager
def outside_zero3() -> Iterator[None]:
    """Plain ``from_pretrained`` in one rank while the trainer's ZeRO-3 config is alive.

    transformers loads every model under ``deepspeed.zero.Init`` while a ZeRO-3 TrainingArguments
    exists: each parameter is partitioned with a broadcast to all ranks. Called on rank 0 alone (the
    LoRA merge after training), that broadcast waits for ranks that never come: found hanging forever
    on the first ZeRO-3 + LoRA run (tests/training/test_deepspeed.py).
    """
    from transformers.integrations import deepspeed as hf_ds

    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


def merge_saved_adapter(base_dir: Path | str, adapter_dir: Path, out_dir: Path) -> None:
    """Merge a saved LoRA adapter into its base model (loaded on the CPU, in this rank only) and save it."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    with outside_zero3():
        base = AutoModelForImageTextToText.from_pretrained(str(base_dir), dtype="auto")
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)


def load_model_checkpoint(model: Any, folder: str | Path) -> None:
    """Load a full-model checkpoint folder into ``model``, matching weights by name.

    transformers 5 saves Qwen2.5-VL checkpoints under the original key names (``model.layers.*``,
    ``visual.*``) but Trainer's resume loads them as stored: no key matches, the weights stay as they
    were, and only a warning says so. ``from_pretrained`` applies the renaming; strict loading turns any
    other mismatch into an error.
    """
    fresh = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
    model.load_state_dict(fresh.state_dict(), strict=True)
    del fresh


def with_checkpoint_loading(trainer_cls: type) -> type:
    """``trainer_cls`` resuming full-model checkpoints through :func:`load_model_checkpoint` (LoRA,
    DeepSpeed and FSDP checkpoints keep transformers' own loading)."""

    class Resumable(trainer_cls):  # type: ignore[misc, valid-type]
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            target = model if model is not None else self.model
            if hasattr(target, "peft_config") or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_model_checkpoint(target, resume_from_checkpoint)
            return None

    Resumable.__name__ = Resumable.__qualname__ = f"Resumable{trainer_cls.__name__}"
    return Resumable


def log_model_artifacts(model_dir: Path) -> None:
    """Upload the saved model folder to the active MLflow run under `model/`."""
    import mlflow

    if mlflow.active_run() is None:
        return
    for child in sorted(Path(model_dir).iterdir()):
        if child.is_dir():
            mlflow.log_artifacts(str(child), artifact_path=f"model/{child.name}")
        else:
            mlflow.log_artifact(str(child), artifact_path="model")


def final_metrics(history: list[dict[str, float]], summary: dict[str, float], keys: list[str]) -> dict[str, float]:
    """Final values: the trainer's summary plus, for each key, its first and last logged value.

    Summary entries named like a per-step metric (epoch, entropy, ...) are dropped, so logging the
    result does not add a stray point to those step series in MLflow.
    """
    step_keys = {k for row in history for k in row}
    out = {k: v for k, v in summary.items() if k not in step_keys}
    for k in keys:
        values = [row[k] for row in history if k in row]
        if values:
            out[f"first_{k}"] = values[0]
            out[f"final_{k}"] = values[-1]
    return out


def log_final_metrics(metrics: dict[str, float]) -> None:
    """The stage's final metrics (train_loss, final_loss, reward halves, ...) in the active MLflow run."""
    import mlflow

    from sifthinker.training.callbacks import mlflow_name

    if mlflow.active_run() is not None:
        mlflow.log_metrics({mlflow_name(k): v for k, v in metrics.items()})


def train_and_save(trainer: Any, processor: Any, base_dir: Path | str, out_dir: Path, history: list[dict[str, float]],
                   summary: dict[str, float], keys: list[str],
                   extra: Callable[[list[dict[str, float]]], dict[str, float]] | None = None,
                   resume_from: Path | None = None, tracking_retry_s: float = 600.0) -> dict[str, float]:
    """Train, save the (merged) model, and log final metrics + the model folder to the active MLflow run
    (each retried for up to ``tracking_retry_s`` while the server is away: sifthinker.registry.tracking_retry).

    `history`/`summary` are the MetricsCallback's (filled during training); `extra` adds stage-specific
    final metrics computed from the history (e.g. GRPO's reward halves). `resume_from`: a checkpoint
    folder to continue from (weights, optimizer, scheduler, RNG, step counter).
    """
    quiet_trainer(trainer)
    t0 = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_s = time.monotonic() - t0
    finalize_model(trainer, processor, base_dir, out_dir)
    metrics = final_metrics(history, summary, keys)
    losses = [row["loss"] for row in history if "loss" in row]
    if resume_from is not None and losses:
        # transformers averages the loss over the steps this process ran; the history holds every step
        # since the start (the checkpoint's log replayed), so the run's mean matches an unbroken run's.
        metrics["train_loss"] = sum(losses) / len(losses)
    if extra is not None:
        metrics.update(extra(history))
    metrics["train_seconds"] = train_s
    retrying("logging the final metrics to MLflow", lambda: log_final_metrics(metrics), tracking_retry_s)
    retrying(f"uploading {out_dir} to MLflow", lambda: log_model_artifacts(out_dir), tracking_retry_s)
    return metrics
