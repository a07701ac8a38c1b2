import os
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Model

from components.conftest import artifact, io_types, stage_events
from components.sft.component import sft
from sifthinker.training.common import TrainResult


def test_spec():
    ins, outs = io_types(sft)
    assert ins == {"recipe": "String", "pipeline_run": "String", "train_data": "system.Dataset@0.0.1"}
    assert outs == {"model": "system.Model@0.0.1"}


def test_calls_the_library_and_records_lineage(recipe, work_env, monkeypatch, tmp_path):
    calls = {}

    def ensure_base_model(cfg, corpus_dir):
        calls["corpus"] = corpus_dir
        return "Qwen/some-hub-id"  # a hub id must reach run_sft unchanged (not as a Path)

    def run_sft(cfg, train_dir, base_model_dir, out_dir):  # a stand-in for training: the wiring is under test
        calls.update(cfg=cfg, train=train_dir, base=base_model_dir, out=out_dir,
                     pipeline_run=os.environ.get("SIFTHINKER_PIPELINE_RUN"))
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")
        return TrainResult(output_dir=out_dir, metrics={"train_loss": 1.5, "first_loss": 2.0, "final_loss": 1.0},
                           history=[{"step": 1.0}, {"step": 4.0}], mlflow_run_id="mlf-1", stage="sft")

    monkeypatch.setattr("sifthinker.model.ensure_base_model", ensure_base_model)
    monkeypatch.setattr("sifthinker.training.sft.run_sft", run_sft)
    train = artifact(Dataset, tmp_path / "train")
    model = artifact(Model, tmp_path / "model")
    sft.python_func(recipe=recipe, pipeline_run="job-123", train_data=train, model=model)

    assert calls["corpus"] == calls["train"] == tmp_path / "train"
    assert calls["base"] == "Qwen/some-hub-id"
    assert calls["out"] == tmp_path / "model" and (tmp_path / "model" / "config.json").is_file()
    assert calls["cfg"].data.num_train == 12
    assert calls["pipeline_run"] == "job-123"
    assert model.metadata["stage"] == "sft" and model.metadata["train_data"] == train.uri
    assert model.metadata["metrics"]["train_loss"] == 1.5 and model.metadata["mlflow_run_id"] == "mlf-1"
    assert stage_events(work_env) == [("start", "sft", ""), ("done", "sft", "loss 2.000 -> 1.000, 4 steps")]


def test_a_failing_library_call_is_reported_as_a_failed_stage(recipe, work_env, monkeypatch, tmp_path):
    def run_sft(cfg, train_dir, base_model_dir, out_dir):
        raise ValueError("record 'x' has no assistant trace\nsecond line")

    monkeypatch.setattr("sifthinker.model.ensure_base_model", lambda cfg, corpus: "base")
    monkeypatch.setattr("sifthinker.training.sft.run_sft", run_sft)
    with pytest.raises(ValueError, match="no assistant trace"):
        sft.python_func(recipe=recipe, pipeline_run="job-1", train_data=artifact(Dataset, tmp_path / "t"),
                        model=artifact(Model, tmp_path / "m"))
    assert stage_events(work_env) == [("start", "sft", ""),
                                      ("failed", "sft", "ValueError: record 'x' has no assistant trace")]
