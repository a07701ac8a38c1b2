"""grpo_sif: GRPO with the four SIF rewards, starting from the SFT model (`run_grpo`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def grpo_sif(recipe: str, pipeline_run: str, train_data: Input[Dataset], sft_model: Input[Model],
             model: Output[Model]):
    """Train the SFT model with GRPO-SIF; the `model` artifact's metadata carries its lineage."""
    from pathlib import Path

    from sifthinker.names import Stage
    from sifthinker.runtime.stages import json_safe, stage
    from sifthinker.training.grpo import run_grpo

    with stage(Stage.GRPO_SIF, recipe, pipeline_run) as st:
        result = run_grpo(st.cfg, Path(train_data.path), Path(sft_model.path), Path(model.path))
        parent_runs = {Stage.SFT.value: sft_model.metadata.get("mlflow_run_id", ""),
                       Stage.GRPO_SIF.value: result.mlflow_run_id or ""}
        model.metadata.update({"stage": Stage.GRPO_SIF.value, "base_model": st.cfg.model.base,
                               "train_data": train_data.uri, "sft_model": sft_model.uri,
                               "metrics": json_safe(result.metrics), "mlflow_run_id": result.mlflow_run_id or "",
                               "parent_runs": parent_runs})
        st.done(result.headline())
