"""deploy: the KServe InferenceService for the registered model (`sifthinker.serving.deploy.deploy`)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def deploy(recipe: str, pipeline_run: str, model_uri: str, apply: bool, manifest: Output[Artifact]) -> str:
    """Write the InferenceService manifest (and apply it to the cluster when `apply`); returns the result."""
    import json
    from pathlib import Path

    from sifthinker.names import Stage
    from sifthinker.runtime.stage_logs import log_deploy
    from sifthinker.runtime.stages import json_safe, stage
    from sifthinker.serving.deploy import deploy as deploy_model

    with stage(Stage.DEPLOY, recipe, pipeline_run, track=True) as st:
        result = deploy_model(st.cfg, model_uri, apply=apply, out_dir=Path(manifest.path))
        log_deploy(result)
        manifest.metadata.update({"model_uri": model_uri, "applied": apply, "validation": result.validation})
        st.done(result.headline())
    return json.dumps(json_safe(result.to_dict()))
