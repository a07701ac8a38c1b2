"""Training stages on hand-made fixture records: dataset conversion, SFT and GRPO with MLflow logging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("trl")

from helpers import H, W, make_cfg, make_records  # noqa: E402

from sifthinker.config.model_config import LoraConfig  # noqa: E402
from sifthinker.config.run_config import RunConfig
from sifthinker.method import trace as sif  # noqa: E402
from sifthinker.model import load_model  # noqa: E402
from sifthinker.training.callbacks import MetricsCallback  # noqa: E402
from sifthinker.training.datasets import grpo_dataset, load_records, sft_dataset  # noqa: E402
from sifthinker.training.grpo import half_means, reward_setup  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    monkeypatch.delenv("SIFTHINKER_WORK_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ---- dataset conversion ---------------------------------------------------------------------------
def test_sft_dataset_has_messages_and_two_images(data_dir):
    ds = sft_dataset(load_records(data_dir), data_dir)
    assert set(ds.column_names) == {"messages", "images"}  # an `image` column would confuse TRL's collator
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert [p["type"] for p in row["messages"][0]["content"]] == ["text", "image", "text", "image", "text"]
    assert sif.validate(row["messages"][1]["content"][0]["text"]) == []
    # the record's own RGB and colour-depth images, in that order (the prompt's order)
    rec = load_records(data_dir)[0]
    assert len(row["images"]) == 2 and row["images"][0].size == (W, H)
    for got, path in zip(row["images"], (rec["image"], rec["depth_image"]), strict=True):
        with Image.open(data_dir / path) as want:
            assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB"))), path


def test_grpo_dataset_keeps_the_reward_columns(data_dir):
    recs = load_records(data_dir)
    ds = grpo_dataset(recs, data_dir)
    assert {"prompt", "images", "response", "answer_type", "problem", "image", "gt_boxes", "depth_map"} <= set(
        ds.column_names
    )
    row = ds[1]
    assert row["response"] == recs[1]["response"] and row["answer_type"] == "name"
    assert row["problem"] == recs[1]["problem"]
    assert row["gt_boxes"] == recs[1]["normalized_solution_round"]["bbox_3d"]
    assert Path(row["image"]).is_absolute() and Path(row["image"]).is_file()
    assert Path(row["depth_map"]).is_absolute() and np.load(row["depth_map"]).shape == (H, W)
    assert [m["role"] for m in row["prompt"]] == ["user"] and len(row["images"]) == 2


def test_rewards_score_the_fixture_trace_through_the_dataset_columns(data_dir):
    ds = grpo_dataset(load_records(data_dir), data_dir)
    funcs, weights = reward_setup(make_cfg(Path("/unused")))
    assert [f.__name__ for f in funcs] == ["format_reward", "answer_reward", "box_reward", "depth_reward"]
    rows = [ds[i] for i in range(3)]
    cols = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    gold = [load_records(data_dir)[i]["messages"][1]["content"] for i in range(3)]
    # format, answer, box (IoU of the exact box; the progress term is 0 on a first visit), depth
    assert [f(gold, **cols) for f in funcs] == [[1.0, 1.0, 1.0]] * 4
    # the same traces with a wrong answer: only the answer reward drops, so each reads its own column
    wrong = [g.replace(f"<answer>{r['response']}</answer>", "<answer>purple</answer>")
             for g, r in zip(gold, rows, strict=True)]
    assert all(w != g for w, g in zip(wrong, gold, strict=True))
    assert [f(wrong, **cols) for f in funcs] == [[1.0] * 3, [0.0] * 3, [1.0] * 3, [1.0] * 3]
    assert weights == [1.0, 1.0, 1.0, 1.0]


def test_reward_setup_rejects_unknown_names_and_skips_zero_weights(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.grpo.reward_weights = {"format": 1.0, "answer": 0.0, "box": 2.0}
    funcs, weights = reward_setup(cfg)
    assert [f.__name__ for f in funcs] == ["format_reward", "box_reward"] and weights == [1.0, 2.0]
    cfg.grpo.reward_weights = {"fromat": 1.0}
    with pytest.raises(ValueError, match="fromat"):
        reward_setup(cfg)


def test_collator_trains_only_on_the_assistant_turn(data_dir, base_model):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    _, processor = load_model(base_model)
    ds = sft_dataset(load_records(data_dir), data_dir)
    batch = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)([ds[0], ds[1]])
    for row in range(2):
        labels = batch["labels"][row]
        target = processor.tokenizer.decode(labels[labels != -100])
        assert target == ds[row]["messages"][1]["content"][0]["text"] + "<|im_end|>"


def test_callback_history_and_half_means():
    lines: list[str] = []
    cb = MetricsCallback("t", mlflow_logging=False, printer=lines.append)

    class S:
        global_step, epoch, max_steps = 1, 0.5, 2

    cb.on_log(None, S, None, logs={"loss": 2.0, "reward": 0.5, "note": "x", "bad": math.nan})
    S.global_step = 2
    cb.on_log(None, S, None, logs={"loss": 1.0, "reward": 1.5})
    cb.on_log(None, S, None, logs={"train_runtime": 3.0, "train_loss": 1.5})
    # numbers only (the string and the NaN are dropped); the end-of-training summary is kept apart
    assert cb.history == [{"step": 1.0, "epoch": 0.5, "loss": 2.0, "reward": 0.5},
                          {"step": 2.0, "epoch": 0.5, "loss": 1.0, "reward": 1.5}]
    assert cb.summary == {"train_runtime": 3.0, "train_loss": 1.5}
    assert len(lines) == 2
    assert lines[0].startswith("[t] step 1/2 epoch 0.50 loss=2 reward=0.5 (")  # then the elapsed time
    assert lines[1].startswith("[t] step 2/2 epoch 0.50 loss=1 reward=1.5 (")
    assert half_means(cb.history, "reward") == {"reward_first_half": 0.5, "reward_second_half": 1.5}


def test_rollout_prompt_has_both_images_and_rgb_reproduces_the_original(data_dir):
    recs = load_records(data_dir)
    both, rgb = (grpo_dataset(recs, data_dir, p)[0] for p in ("rgb+depth", "rgb"))
    kinds = [[part["type"] for part in row["prompt"][0]["content"]] for row in (both, rgb)]
    assert kinds[0].count("image") == len(both["images"]) == 2  # P1 fixed: RGB and depth, as in SFT and eval
    assert kinds[1].count("image") == len(rgb["images"]) == 1  # the original's RL prompt: RGB only
    with Image.open(data_dir / recs[0]["image"]) as want:
        assert np.array_equal(np.asarray(rgb["images"][0].convert("RGB")), np.asarray(want.convert("RGB")))
    assert make_cfg(Path("/unused")).grpo.prompt_images == "rgb+depth"
    assert RunConfig.from_dict({"parity": "original"}).grpo.prompt_images == "rgb"


def test_rollouts_use_vllm_colocate_only_with_vllm_and_a_gpu():
    from sifthinker.training.grpo import grpo_args, rollout_args

    assert rollout_args(True, vllm_available=True, gpu=True) == {"use_vllm": True, "vllm_mode": "colocate"}
    for available, gpu in ((False, True), (True, False), (False, False)):
        assert rollout_args(True, vllm_available=available, gpu=gpu) == {"use_vllm": False}
    assert rollout_args(False, vllm_available=True, gpu=True) == {"use_vllm": False}
    cfg = make_cfg(Path("/unused"))
    cfg.grpo.use_vllm = True  # on this machine (no vllm, no GPU) the recipe still trains, with generate
    assert grpo_args(cfg, "/tmp/unused-grpo", [1.0]).use_vllm is False


def test_preflight_stops_before_any_model_loads(data_dir, base_model, tmp_path, monkeypatch):
    from sifthinker.training.grpo import run_grpo
    from sifthinker.training.preflight import TrainingInputError
    from sifthinker.training.sft import run_sft

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("sifthinker.model.loading.load_model", no_loading)
    cfg = make_cfg(tmp_path)
    cfg.grpo.num_generations = 3  # 8 completions per step are not whole groups of 3
    with pytest.raises(TrainingInputError, match=r"not a multiple of num_generations \(3\)"):
        run_grpo(cfg, data_dir, base_model, tmp_path / "out")
    cfg = make_cfg(tmp_path)
    cfg.sft.learning_rate = -1.0  # what a hand-edited recipe can hold: the same checks as loading one
    with pytest.raises(TrainingInputError, match=r"invalid recipe: recipe\.sft\.learning_rate"):
        run_sft(cfg, data_dir, base_model, tmp_path / "out")
    with pytest.raises(TrainingInputError, match=r"training data folder .*missing.* does not exist"):
        run_grpo(make_cfg(tmp_path), tmp_path / "missing", base_model, tmp_path / "out")
    with pytest.raises(TrainingInputError, match=r"model folder .*no-model does not exist"):
        run_sft(make_cfg(tmp_path), data_dir, tmp_path / "no-model", tmp_path / "out")
    bad = tmp_path / "bad-data"
    recs = make_records(bad, n=3)
    recs[1]["normalized_solution_round"]["bbox_3d"] = [[0.5, 0.5, 0.2, 0.2]]  # an inverted GT box
    recs[2]["image"] = "images/gone.png"
    (bad / "records.json").write_text(json.dumps(recs))
    with pytest.raises(TrainingInputError, match=r"fails \d+ data check\(s\); fix or rebuild the data") as err:
        run_grpo(make_cfg(tmp_path), bad, base_model, tmp_path / "out")
    print(err.value)
    assert not (tmp_path / "out").exists()


# ---- training runs --------------------------------------------------------------------------------
def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _tensor_names(model_dir: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _tensors(model_dir).items()}


def _mlflow_run(cfg: RunConfig, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    return client, client.get_run(run_id)


@pytest.mark.slow
def test_sft_lowers_the_loss_and_logs_to_mlflow(data_dir, base_model, tmp_path):
    from sifthinker.training.sft import run_sft

    cfg = make_cfg(tmp_path)
    cfg.sft.learning_rate, cfg.sft.epochs, cfg.sft.logging_steps = 1e-2, 4, 1
    cfg.sft.per_device_batch_size, cfg.sft.warmup_ratio = 2, 0.0
    res = run_sft(cfg, data_dir, base_model, tmp_path / "sft")
    losses = [r["loss"] for r in res.history if "loss" in r]
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0]
    assert res.metrics["final_loss"] == losses[-1] and res.metrics["train_seconds"] > 0
    model, processor = load_model(res.output_dir, cfg)  # a plain save_pretrained folder
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    client, run = _mlflow_run(cfg, res.mlflow_run_id)
    assert run.data.tags["sifthinker.stage"] == "sft" and run.data.params["sft.learning_rate"] == "0.01"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 12
    assert len(client.get_metric_history(run.info.run_id, "epoch")) == 12  # no stray summary point
    assert {"train_loss", "final_loss", "first_loss", "train_seconds"} <= set(run.data.metrics)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= arts


@pytest.mark.slow
def test_sft_with_lora_merges_the_adapter(data_dir, base_model, tmp_path):
    from safetensors import safe_open

    from sifthinker.training.sft import run_sft

    cfg = make_cfg(tmp_path)
    cfg.sft.lora = LoraConfig(r=4, alpha=8)
    res = run_sft(cfg, data_dir, base_model, tmp_path / "sft-lora", max_steps=2)
    with safe_open(res.output_dir / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)
    with safe_open(base_model / "model.safetensors", "pt") as f:
        assert sorted(keys) == sorted(f.keys())  # same tensors as the base: merged, not wrapped


@pytest.mark.slow
def test_grpo_runs_and_logs_reward_metrics(data_dir, base_model, tmp_path):
    from sifthinker.training.grpo import run_grpo

    cfg = make_cfg(tmp_path)
    cfg.grpo.num_items, cfg.grpo.num_generations, cfg.grpo.per_device_batch_size = 4, 2, 4
    cfg.grpo.max_completion_length, cfg.grpo.learning_rate = 16, 1e-3
    cfg.grpo.sample_steps, cfg.grpo.num_samples = 1, 3
    res = run_grpo(cfg, data_dir, base_model, tmp_path / "grpo", max_steps=2)
    assert len(res.history) == 2
    first, last = res.history
    # TRL's reward is the weighted sum of the four SIF rewards (all weights 1 in the local recipe)
    for row in res.history:
        parts = [row[f"rewards/{name}_reward/mean"] for name in ("format", "answer", "box", "depth")]
        assert row["reward"] == pytest.approx(sum(parts), abs=1e-6), row
    # the stage's summary metrics are read off that history: two steps, one per half
    assert (res.metrics["first_reward"], res.metrics["final_reward"]) == (first["reward"], last["reward"])
    assert (res.metrics["reward_first_half"], res.metrics["reward_second_half"]) == (first["reward"], last["reward"])
    assert res.metrics["train_seconds"] > 0
    assert (tmp_path / "work" / "progress.sqlite").is_file()  # the answer reward's progress store
    # a full model folder (the base's tensors, no adapter) that load_model reads
    assert _tensor_names(res.output_dir) == _tensor_names(base_model)
    assert type(load_model(res.output_dir, cfg)[0]).__name__ == "Qwen2_5_VLForConditionalGeneration"
    client, run = _mlflow_run(cfg, res.mlflow_run_id)
    assert run.data.tags["sifthinker.stage"] == "grpo-sif" and run.data.params["grpo.beta"] == "0.04"
    # per step: each reward term's mean and std, KL, completion lengths, zero-variance group fraction
    per_step = ["reward", "reward_std", "kl", "frac_reward_zero_std", "completions/mean_length",
                "completions/max_length", *[f"rewards/{n}_reward/{s}" for n in ("format", "answer", "box", "depth")
                                            for s in ("mean", "std")]]
    for key in per_step:
        assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
    # every sample_steps (1 here) steps: a table of sample completions and their rendered traces
    for step in ("step_00001", "step_00002"):
        table = json.loads(Path(client.download_artifacts(run.info.run_id, f"samples/{step}.json")).read_text())
        cols = table["columns"]
        assert {"question", "completion", "format_reward", "advantage", "image", "trace_png"} <= set(cols)
        assert len(table["data"]) == cfg.grpo.num_samples
        pngs = {a.path for a in client.list_artifacts(run.info.run_id, f"samples/{step}")}
        assert {r[cols.index("trace_png")] for r in table["data"]} <= pngs and pngs
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def test_launcher_decides_when_to_spawn_processes(monkeypatch):
    from sifthinker.training import ranks as launch

    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "SIFTHINKER_NPROC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)
    assert launch.processes_to_launch() == 8  # one process per GPU
    monkeypatch.setenv("SIFTHINKER_NPROC", "1")
    assert launch.processes_to_launch() == 0  # forced single process
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    assert launch.processes_to_launch() == 0 and not launch.is_main_process()  # already a worker
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "SIFTHINKER_NPROC"):
        monkeypatch.delenv(var)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert launch.processes_to_launch() == 0 and launch.is_main_process()


@pytest.mark.slow
def test_sft_relaunches_itself_on_two_processes(data_dir, base_model, tmp_path, monkeypatch):
    """The multi-GPU path (one process per GPU under torchrun), exercised on the CPU with gloo."""
    from sifthinker.training.sft import run_sft

    monkeypatch.setenv("SIFTHINKER_NPROC", "2")
    cfg = make_cfg(tmp_path)
    cfg.sft.warmup_ratio = 0.0  # else the one step runs at learning rate 0 and changes nothing
    res = run_sft(cfg, data_dir, base_model, tmp_path / "sft-ddp", max_steps=1)
    assert res.mlflow_run_id and len(res.history) == 1
    assert res.metrics["final_loss"] == res.history[0]["loss"] > 0
    assert not (res.output_dir / "training_args.bin").exists()
    # rank 0 saved the trained model: the language model moved one step, the frozen vision tower did not
    trained, base = _tensors(res.output_dir), _tensors(base_model)
    assert trained.keys() == base.keys()
    changed = {k for k in base if not (trained[k] == base[k]).all()}  # on disk: model.*, lm_head, visual.*
    assert {k for k in base if k.startswith(("model.", "lm_head."))} == changed
    load_model(res.output_dir, cfg)  # and it loads
    _, run = _mlflow_run(cfg, res.mlflow_run_id)
    assert run.data.tags["sifthinker.stage"] == "sft"
