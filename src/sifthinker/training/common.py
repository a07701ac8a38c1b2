"""Shared pieces of the SFT and GRPO stages: results, device flags, LoRA, saving and MLflow artifacts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sifthinker.config import LoraConfig

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


def device_flags() -> dict[str, Any]:
    """Trainer device arguments: bf16 on CUDA, plain float32 on the CPU (use_cpu, no mixed precision)."""
    import torch

    if torch.cuda.is_available():
        return {"use_cpu": False, "bf16": True}
    return {"use_cpu": True, "bf16": False}


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
    """Final values: the trainer's summary plus, for each key, its first and last logged value."""
    out = {k: v for k, v in summary.items()}
    for k in keys:
        values = [row[k] for row in history if k in row]
        if values:
            out[f"first_{k}"] = values[0]
            out[f"final_{k}"] = values[-1]
    return out
