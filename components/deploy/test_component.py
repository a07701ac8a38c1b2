import json
from pathlib import Path

import pytest
from kfp.dsl import Artifact

from components.conftest import artifact, io_types
from components.deploy.component import deploy


def test_spec():
    ins, outs = io_types(deploy)
    assert ins == {"recipe": "String", "pipeline_run": "String", "model_uri": "String", "apply": "Boolean"}
    assert outs == {"manifest": "system.Artifact@0.0.1", "Output": "String"}


def test_writes_the_manifest_without_applying(recipe, fake_module, tmp_path):
    seen = {}

    def fake_deploy(cfg, model_uri, apply=False, out_dir=None):
        seen.update(uri=model_uri, apply=apply, out=out_dir)
        (Path(out_dir) / "inferenceservice.yaml").write_text("kind: InferenceService\n")
        return {"name": cfg.serving.name, "applied": apply, "manifest": Path(out_dir) / "inferenceservice.yaml"}

    fake_module("sifthinker.serving.deploy", deploy=fake_deploy)
    manifest = artifact(Artifact, tmp_path / "manifest")
    out = deploy.python_func(recipe=recipe, pipeline_run="job-1", model_uri="s3://b/model", apply=False,
                             manifest=manifest)
    assert seen == {"uri": "s3://b/model", "apply": False, "out": tmp_path / "manifest"}
    result = json.loads(out)
    assert result["applied"] is False and result["manifest"].endswith("inferenceservice.yaml")
    assert manifest.metadata == {"model_uri": "s3://b/model", "applied": False}


def test_real_deploy_writes_an_inference_service(recipe, tmp_path):
    pytest.importorskip("sifthinker.serving.deploy")
    manifest = artifact(Artifact, tmp_path / "manifest")
    deploy.python_func(recipe=recipe, pipeline_run="job-1", model_uri="s3://bucket/model", apply=False,
                       manifest=manifest)
    texts = [p.read_text() for p in Path(manifest.path).rglob("*") if p.is_file()]
    assert any("InferenceService" in t for t in texts)
