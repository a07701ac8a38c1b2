"""deploy: the KServe InferenceService for the registered model (`sifthinker.serving.deploy.deploy`)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def deploy(recipe: str, pipeline_run: str, model_uri: str, apply: bool, manifest: Output[Artifact]) -> str:
    """Write the InferenceService manifest (and apply it to the cluster when `apply`); returns the result."""
    import json
    from pathlib import Path

    from sifthinker.orchestration import json_safe, stage_config
    from sifthinker.serving.deploy import deploy as deploy_model

    cfg = stage_config(recipe, pipeline_run)
    out = Path(manifest.path)
    out.mkdir(parents=True, exist_ok=True)
    result = json_safe(deploy_model(cfg, model_uri, apply=apply, out_dir=out))
    manifest.metadata.update({"model_uri": model_uri, "applied": apply})
    print(json.dumps(result, indent=1))
    return json.dumps(result)
