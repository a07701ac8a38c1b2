"""sft: the SFT warm-up on the SIF traces from the recipe's base model (`ensure_base_model`, `run_sft`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def sft(recipe: str, pipeline_run: str, train_data: Input[Dataset], model: Output[Model]):
    """Fine-tune the base model on the train split; the merged model folder is the `model` artifact."""
    from pathlib import Path

    from sifthinker.model import ensure_base_model
    from sifthinker.orchestration import json_safe, stage_config
    from sifthinker.training.sft import run_sft

    cfg = stage_config(recipe, pipeline_run)
    Path(model.path).mkdir(parents=True, exist_ok=True)
    base = ensure_base_model(cfg, Path(train_data.path))
    result = run_sft(cfg, Path(train_data.path), base, Path(model.path))  # base: a folder or a hub id
    print(f"sft: {result.metrics}")
    model.metadata.update({"stage": "sft", "base_model": cfg.model.base, "train_data": train_data.uri,
                           "metrics": json_safe(result.metrics), "mlflow_run_id": result.mlflow_run_id or ""})
