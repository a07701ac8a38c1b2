import os

import mlflow

from sifthinker.config.run_config import RunConfig
from sifthinker.registry.tracking import PIPELINE_RUN_TAG, STAGE_TAG, configure, stage_run


def test_stage_run_tags_and_no_env_leak(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SIFTHINKER_PIPELINE_RUN", "p-123")
    cfg = RunConfig.from_dict({"work_dir": str(tmp_path), "name": "t"})
    with stage_run(cfg, "sft", params={"lr": 0.1}) as run:
        mlflow.log_metric("loss", 1.0)
    assert "MLFLOW_TRACKING_URI" not in os.environ, "the store must not leak into later configs"
    got = mlflow.get_run(run.info.run_id)
    assert got.data.tags[STAGE_TAG] == "sft" and got.data.tags[PIPELINE_RUN_TAG] == "p-123"
    assert got.data.params["lr"] == "0.1" and got.data.metrics["loss"] == 1.0
    assert configure(cfg) == got.info.experiment_id  # the experiment is reused, not recreated


def test_one_parent_run_per_pipeline_run_with_nested_stage_runs(tmp_path, monkeypatch):
    """Stages in separate processes find the one parent by the pipeline run id (here: a cleared cache)."""
    from sifthinker.registry import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SIFTHINKER_PIPELINE_RUN", "p-tree")
    cfg = RunConfig.from_dict({"work_dir": str(tmp_path), "name": "t"})
    with stage_run(cfg, "build-data"):
        pass
    tracking._parents.clear()  # as a later stage in another pod would start
    with stage_run(cfg, "evaluate", part="sif-bench") as ev:
        assert mlflow.get_run(ev.info.run_id).data.tags["mlflow.parentRunId"]
    client = mlflow.MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment(configure(cfg))
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"  # the UI's model-training view
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags[STAGE_TAG] == "pipeline"]
    assert len(parents) == 1 and parents[0].info.run_name == "p-tree"
    assert parents[0].info.status == "FINISHED" and parents[0].info.end_time >= ev.info.start_time
    assert tracking.stage_runs(cfg, "p-tree").keys() == {"build-data", "evaluate:sif-bench"}
    for name, run_id in tracking.stage_runs(cfg, "p-tree").items():
        r = client.get_run(run_id)
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id, name
        assert r.data.tags[PIPELINE_RUN_TAG] == "p-tree"
    # a stage that fails marks the parent FAILED
    try:
        with stage_run(cfg, "gate"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert client.get_run(parents[0].info.run_id).info.status == "FAILED"


def test_an_experiment_made_before_gets_the_model_training_kind(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig.from_dict({"work_dir": str(tmp_path), "name": "t"})
    client = mlflow.MlflowClient(cfg.tracking_uri)
    exp_id = client.create_experiment(cfg.registry.experiment, artifact_location=(tmp_path / "a").as_uri())
    assert configure(cfg) == exp_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
