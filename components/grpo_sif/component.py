"""grpo_sif: GRPO with the four SIF rewards, starting from the SFT model (`run_grpo`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def grpo_sif(recipe: str, pipeline_run: str, train_data: Input[Dataset], sft_model: Input[Model],
             model: Output[Model]):
    """Train the SFT model with GRPO-SIF; the `model` artifact's metadata carries its lineage."""
    from pathlib import Path

    from sifthinker.orchestration import json_safe, stage_config
    from sifthinker.training.grpo import run_grpo

    cfg = stage_config(recipe, pipeline_run)
    Path(model.path).mkdir(parents=True, exist_ok=True)
    result = run_grpo(cfg, Path(train_data.path), Path(sft_model.path), Path(model.path))
    print(f"grpo-sif: {result.metrics}")
    parent_runs = {"sft": sft_model.metadata.get("mlflow_run_id", ""), "grpo-sif": result.mlflow_run_id or ""}
    model.metadata.update({"stage": "grpo-sif", "base_model": cfg.model.base, "train_data": train_data.uri,
                           "sft_model": sft_model.uri, "metrics": json_safe(result.metrics),
                           "mlflow_run_id": result.mlflow_run_id or "", "parent_runs": parent_runs})
