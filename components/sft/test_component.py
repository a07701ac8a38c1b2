import os
from pathlib import Path
from types import SimpleNamespace

from kfp.dsl import Dataset, Model

from components.conftest import artifact, io_types
from components.sft.component import sft


def test_spec():
    ins, outs = io_types(sft)
    assert ins == {"recipe": "String", "pipeline_run": "String", "train_data": "system.Dataset@0.0.1"}
    assert outs == {"model": "system.Model@0.0.1"}


def test_calls_the_library_and_records_lineage(recipe, fake_module, tmp_path):
    calls = {}

    def ensure_base_model(cfg, corpus_dir):
        calls["corpus"] = corpus_dir
        return "Qwen/some-hub-id"  # a hub id must reach run_sft unchanged (not as a Path)

    def run_sft(cfg, train_dir, base_model_dir, out_dir):
        calls.update(cfg=cfg, train=train_dir, base=base_model_dir, out=out_dir,
                     pipeline_run=os.environ.get("SIFTHINKER_PIPELINE_RUN"))
        (Path(out_dir) / "config.json").write_text("{}")
        return SimpleNamespace(output_dir=out_dir, metrics={"train_loss": 1.5}, history=[], mlflow_run_id="mlf-1")

    fake_module("sifthinker.model", ensure_base_model=ensure_base_model)
    fake_module("sifthinker.training.sft", run_sft=run_sft)
    train = artifact(Dataset, tmp_path / "train")
    model = artifact(Model, tmp_path / "model")
    sft.python_func(recipe=recipe, pipeline_run="job-123", train_data=train, model=model)

    assert calls["corpus"] == calls["train"] == tmp_path / "train"
    assert calls["base"] == "Qwen/some-hub-id"
    assert calls["out"] == tmp_path / "model" and (tmp_path / "model" / "config.json").is_file()
    assert calls["cfg"].data.num_train == 12
    assert calls["pipeline_run"] == "job-123"
    assert model.metadata["stage"] == "sft" and model.metadata["train_data"] == train.uri
    assert model.metadata["metrics"] == {"train_loss": 1.5} and model.metadata["mlflow_run_id"] == "mlf-1"
