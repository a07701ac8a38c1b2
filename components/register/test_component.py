import json

from kfp.dsl import Model

from components.conftest import artifact, io_types, stage_events
from components.register.component import register
from sifthinker.registry.model_versions import RegisteredVersion


def test_spec():
    ins, outs = io_types(register)
    assert ins == {"recipe": "String", "pipeline_run": "String", "model": "system.Model@0.0.1",
                   "metrics_json": "String"}
    assert outs == {"model_name": "String", "version": "String", "model_uri": "String", "source_uri": "String",
                    "run_id": "String"}


def _model(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return artifact(Model, tmp_path / "model", train_data=str(tmp_path / "train"), base_model="tiny",
                    sft_model="/runs/sft/model", parent_runs={"sft": "r-sft", "grpo-sif": "r-grpo"})


def test_lineage_and_outputs(recipe, work_env, monkeypatch, tmp_path):
    seen = {}

    def register_model(cfg, model_dir, metrics, lineage):  # a stand-in for MLflow: the wiring is under test
        seen.update(model_dir=model_dir, metrics=metrics, lineage=lineage)
        return RegisteredVersion(name="sifthinker-local", version="3", source_uri="file:///x/model", run_id="run-9")

    monkeypatch.setattr("sifthinker.registry.model_versions.register_model", register_model)
    model = _model(tmp_path)
    out = register.python_func(recipe=recipe, pipeline_run="job-7", model=model,
                               metrics_json=json.dumps({"format_validity": 0.9}))
    assert tuple(out) == ("sifthinker-local", "3", "models:/sifthinker-local/3", "file:///x/model", "run-9")
    assert seen["model_dir"] == tmp_path / "model" and seen["metrics"] == {"format_validity": 0.9}
    lin = seen["lineage"]
    assert lin["data_dir"] == str(tmp_path / "train") and lin["model_artifact"] == model.uri
    assert lin["parent_runs"] == {"sft": "r-sft", "grpo-sif": "r-grpo"} and lin["pipeline_run"] == "job-7"
    assert stage_events(work_env)[-1] == ("done", "register", "sifthinker-local version 3 (alias challenger)")


def test_registers_in_a_real_mlflow_store(recipe, work_env, tmp_path):
    """The real registry (sqlite under the work dir): a version with alias challenger and lineage tags."""
    from mlflow import MlflowClient

    name, version, model_uri, source_uri, run_id = register.python_func(
        recipe=recipe, pipeline_run="job-8", model=_model(tmp_path), metrics_json=json.dumps({"format_validity": 0.9}))
    assert (name, version, model_uri) == ("sifthinker-local", "1", "models:/sifthinker-local/1")
    assert source_uri.endswith("/artifacts")  # the logged model's artifact folder
    client = MlflowClient(f"sqlite:///{work_env / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("sifthinker-local", "challenger")
    assert str(mv.version) == "1" and mv.run_id == run_id
    assert mv.tags["pipeline_run"] == "job-8"
    run = client.get_run(run_id)
    assert run.data.tags["sifthinker.pipeline_run"] == "job-8"
    # nested under the pipeline run's parent run, named after it
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "job-8" and parent.data.tags["sifthinker.stage"] == "pipeline"
