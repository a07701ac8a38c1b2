"""sft: the SFT warm-up on the SIF traces from the recipe's base model (`ensure_base_model`, `run_sft`)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def sft(recipe: str, pipeline_run: str, train_data: Input[Dataset], model: Output[Model]):
    """Fine-tune the base model on the train split; the merged model folder is the `model` artifact."""
    from pathlib import Path

    from sifthinker.model import ensure_base_model
    from sifthinker.names import Stage
    from sifthinker.runtime.stages import json_safe, stage
    from sifthinker.training.sft import run_sft

    with stage(Stage.SFT, recipe, pipeline_run) as st:
        base = ensure_base_model(st.cfg, Path(train_data.path))  # a folder, or a hub id on a cluster
        result = run_sft(st.cfg, Path(train_data.path), base, Path(model.path))
        model.metadata.update({"stage": Stage.SFT.value, "base_model": st.cfg.model.base,
                               "train_data": train_data.uri, "metrics": json_safe(result.metrics),
                               "mlflow_run_id": result.mlflow_run_id or ""})
        st.done(result.headline())
