import os

import mlflow

from sifthinker.config import RunConfig
from sifthinker.tracking import PIPELINE_RUN_TAG, STAGE_TAG, configure, stage_run


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
