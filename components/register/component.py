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
    from pathlib import Path

    from sifthinker.names import Stage
    from sifthinker.registry.lineage import lineage_from_metadata
    from sifthinker.registry.model_versions import register_model
    from sifthinker.runtime.stages import stage

    with stage(Stage.REGISTER, recipe, pipeline_run) as st:
        lineage = lineage_from_metadata(st.cfg, dict(model.metadata), model.uri, pipeline_run)
        rv = register_model(st.cfg, Path(model.path), json.loads(metrics_json), lineage)
        st.done(rv.headline())
    return (str(rv.name), str(rv.version), rv.uri, str(rv.source_uri), str(rv.run_id))
