from pathlib import Path

from kfp.dsl import Dataset, Model

from components.conftest import artifact, io_types, small_config, stage_events
from components.grpo_sif.component import grpo_sif
from sifthinker.training.common import TrainResult


def test_spec():
    ins, outs = io_types(grpo_sif)
    assert ins == {"recipe": "String", "pipeline_run": "String", "train_data": "system.Dataset@0.0.1",
                   "sft_model": "system.Model@0.0.1"}
    assert outs == {"model": "system.Model@0.0.1"}
    assert grpo_sif.name == "grpo-sif"  # the task name that cfg.platform.gpu_steps refers to


def test_trains_from_the_sft_model_and_keeps_lineage(recipe, work_env, monkeypatch, tmp_path):
    calls = {}

    def run_grpo(cfg, train_dir, model_dir, out_dir):  # a stand-in for training: the wiring is under test
        calls.update(train=train_dir, model=model_dir, out=out_dir, generations=cfg.grpo.num_generations)
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "model.safetensors").write_bytes(b"x")
        return TrainResult(output_dir=out_dir, metrics={"reward_first_half": 1.25, "reward_second_half": 2.5},
                           history=[{"step": 2.0, "reward": 2.5}], mlflow_run_id="grpo-run", stage="grpo-sif")

    monkeypatch.setattr("sifthinker.training.grpo.run_grpo", run_grpo)
    train = artifact(Dataset, tmp_path / "train")
    sft_model = artifact(Model, tmp_path / "sft", mlflow_run_id="sft-run")
    model = artifact(Model, tmp_path / "grpo")
    grpo_sif.python_func(recipe=recipe, pipeline_run="job-1", train_data=train, sft_model=sft_model, model=model)

    assert calls == {"train": tmp_path / "train", "model": tmp_path / "sft", "out": tmp_path / "grpo",
                     "generations": small_config().grpo.num_generations}  # the recipe reached the library
    meta = model.metadata
    assert meta["sft_model"] == sft_model.uri and meta["train_data"] == train.uri
    assert meta["parent_runs"] == {"sft": "sft-run", "grpo-sif": "grpo-run"}
    assert meta["metrics"] == {"reward_first_half": 1.25, "reward_second_half": 2.5}
    assert stage_events(work_env)[-1] == ("done", "grpo-sif", "mean reward by half 1.25 -> 2.50, 2 steps")
