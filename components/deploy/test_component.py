import json
from pathlib import Path

import yaml
from kfp.dsl import Artifact

from components.conftest import artifact, io_types, stage_events
from components.deploy.component import deploy
from sifthinker.serving.deploy import DeployResult


def test_spec():
    ins, outs = io_types(deploy)
    assert ins == {"recipe": "String", "pipeline_run": "String", "model_uri": "String", "apply": "Boolean"}
    assert outs == {"manifest": "system.Artifact@0.0.1", "Output": "String"}


def test_writes_the_manifest_without_applying(recipe, work_env, monkeypatch, tmp_path):
    seen = {}

    def fake_deploy(cfg, model_uri, apply=False, out_dir=None):  # a stand-in: the wiring is under test
        seen.update(uri=model_uri, apply=apply, out=out_dir)
        Path(out_dir).mkdir(parents=True)
        path = Path(out_dir) / "inferenceservice.yaml"
        path.write_text("kind: InferenceService\n")
        manifest = {"metadata": {"name": cfg.serving.name, "namespace": "ns",
                                 "annotations": {"sifthinker.io/model-uri": model_uri}}}
        return DeployResult(manifest=manifest, path=path, validation="validated by a fake", applied=apply)

    monkeypatch.setattr("sifthinker.serving.deploy.deploy", fake_deploy)
    manifest = artifact(Artifact, tmp_path / "manifest")
    out = deploy.python_func(recipe=recipe, pipeline_run="job-1", model_uri="s3://b/model", apply=False,
                             manifest=manifest)
    assert seen == {"uri": "s3://b/model", "apply": False, "out": tmp_path / "manifest"}
    result = json.loads(out)
    assert result["applied"] is False and result["path"] == str(tmp_path / "manifest" / "inferenceservice.yaml")
    assert manifest.metadata == {"model_uri": "s3://b/model", "applied": False, "validation": "validated by a fake"}
    assert stage_events(work_env)[-1] == ("done", "deploy", "wrote s3://b/model as ns/sifthinker; validated by a fake")


def test_real_deploy_writes_an_inference_service(recipe, work_env, monkeypatch, tmp_path):
    monkeypatch.delenv("CRD_DIR", raising=False)  # as on a user's machine: the typed models validate
    manifest = artifact(Artifact, tmp_path / "manifest")
    out = json.loads(deploy.python_func(recipe=recipe, pipeline_run="job-1", model_uri="s3://bucket/model",
                                        apply=False, manifest=manifest))
    written = yaml.safe_load(Path(out["path"]).read_text())
    assert Path(out["path"]).parent == tmp_path / "manifest"
    assert (written["apiVersion"], written["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    env = {e["name"]: e.get("value") for e in written["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == "s3://bucket/model"
    assert out["applied"] is False and "typed models" in out["validation"]
    assert manifest.metadata["validation"] == out["validation"]
