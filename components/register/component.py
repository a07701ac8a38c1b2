"""register: an MLflow model version with metrics and lineage, alias `challenger` (`register_model`)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def register(recipe: str, pipeline_run: str, model: Input[Model], metrics_json: str) -> NamedTuple(
        "Registered", model_name=str, version=str, model_uri=str, source_uri=str, run_id=str):
    """Register the trained model; lineage = the model artifact, its upstream artifacts, the pipeline run.

    `model_uri` is the pinned registry URI `models:/NAME/VERSION` (what deploy takes); `source_uri` is
    where the registry stored the model files.
    """
    import json
    import os
    from pathlib import Path

    from sifthinker.orchestration import stage_config
    from sifthinker.registry import register_model

    cfg = stage_config(recipe, pipeline_run)
    meta = dict(model.metadata)
    lineage = {"data_dir": meta.get("train_data", ""), "base_model": meta.get("base_model", cfg.model.base),
               "sft_model": meta.get("sft_model", ""), "model_artifact": model.uri, "recipe": cfg.name,
               "parent_runs": {k: v for k, v in dict(meta.get("parent_runs") or {}).items() if v},
               "pipeline_run": os.environ.get("SIFTHINKER_PIPELINE_RUN", pipeline_run)}
    rv = register_model(cfg, Path(model.path), json.loads(metrics_json), lineage)
    print(f"registered {rv.name} version {rv.version}: {rv.source_uri}")
    return (str(rv.name), str(rv.version), f"models:/{rv.name}/{rv.version}", str(rv.source_uri), str(rv.run_id))
