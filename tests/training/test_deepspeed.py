"""DeepSpeed ZeRO for real, on the CPU: the recipes' config file, two processes, gloo.

The 7B recipes train under ``images/deepspeed/zero3.json``; here the same file (device settings adapted by
:func:`sifthinker.training.deepspeed_config.deepspeed_config`, the code that reads it for every run) trains
the tiny model on two CPU processes (``DS_ACCELERATOR=cpu``, which the launcher sets without CUDA):
SFT with LoRA through ``run_stage`` (merged and loadable), GRPO-SIF killed with SIGKILL after a ZeRO-3
checkpoint and resumed (the step counter continues, the progress store holds whole-group means, P2),
and ZeRO-2 across two "nodes" started from the ``PET_*`` variables alone, as Kubeflow Trainer starts them.

DeepSpeed builds its ``deepspeed_shm_comm`` extension on first use (~40 s on this 2-core VM); it is
cached in ``work/torch_extensions`` (git-ignored) unless ``TORCH_EXTENSIONS_DIR`` says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import psutil
import pytest

pytest.importorskip("trl")
pytest.importorskip("deepspeed")

from helpers import make_cfg  # noqa: E402

from sifthinker.config.model_config import LoraConfig  # noqa: E402
from sifthinker.model import load_model  # noqa: E402
from sifthinker.rewards.progress import SQLiteProgressStore  # noqa: E402
from sifthinker.training.checkpoints import MARKER  # noqa: E402
from sifthinker.training.deepspeed_config import DeepSpeedConfigError, deepspeed_config  # noqa: E402
from sifthinker.training.preflight import TRL_VLLM_RANGE, TrainingInputError, check_vllm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ZERO3 = REPO / "images" / "deepspeed" / "zero3.json"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("SIFTHINKER_WORK_DIR", "MLFLOW_TRACKING_URI", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.environ.get("TORCH_EXTENSIONS_DIR",
                                                              str(REPO / "work" / "torch_extensions")))
    monkeypatch.setenv("SIFTHINKER_TORCH_THREADS", "1")  # two ranks on two cores


@pytest.fixture(scope="module")
def sft_model(data_dir, base_model, tmp_path_factory) -> Path:
    """The tiny model after a short single-process SFT: its rollouts earn answer rewards that differ
    within a group, so whole-group and half-group means differ (a random model scores 0 everywhere)."""
    from sifthinker.training.sft import run_sft

    root = tmp_path_factory.mktemp("ds-sft")
    cfg = make_cfg(root)
    base = base_model
    cfg.sft.learning_rate, cfg.sft.epochs, cfg.sft.per_device_batch_size, cfg.sft.warmup_ratio = 1e-2, 40, 2, 0.0
    cfg.sft.logging_steps = 40
    return run_sft(cfg, data_dir, base, root / "sft").output_dir


def _params(cfg, run_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking_uri).get_run(run_id).data.params


# ---- the config file, preflight ------------------------------------------------------------------------
def test_the_recipes_zero3_config_runs_on_cpu_with_only_half_precision_turned_off():
    original = json.loads(ZERO3.read_text())
    cpu, gpu = deepspeed_config(ZERO3, cuda=False), deepspeed_config(ZERO3, cuda=True)
    assert gpu == original
    assert cpu["bf16"] == {"enabled": False} and cpu["fp16"] == {"enabled": False}
    assert {k: v for k, v in cpu.items() if k not in ("bf16", "fp16")} == \
        {k: v for k, v in original.items() if k not in ("bf16", "fp16")}


@pytest.mark.parametrize("text, words", [
    (None, "does not exist"),
    ("{ not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"zero_optimization": {"stage": 4}}', "zero_optimization.stage"),
    ('{"zero_optimization": {"stage": 3}}', "stage3_gather_16bit_weights_on_model_save"),
    ('{"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}', "offload_param needs stage 3"),
    ('{"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}', "offload_optimizer.device"),
])
def test_invalid_deepspeed_configs_are_named(tmp_path, text, words):
    path = tmp_path / "ds.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DeepSpeedConfigError, match=words) as e:
        deepspeed_config(path)
    assert str(path) in str(e.value)


def test_preflight_stops_both_stages_on_a_bad_deepspeed_config(data_dir, tmp_path):
    from sifthinker.training.grpo import run_grpo
    from sifthinker.training.sft import run_sft

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # preflight loads no model: a config.json is all it looks for
    (tmp_path / "bad.json").write_text('{"zero_optimization": {"stage": 4}}')
    cfg = make_cfg(tmp_path)
    cfg.sft.deepspeed, cfg.grpo.deepspeed = str(tmp_path / "missing.json"), str(tmp_path / "bad.json")
    with pytest.raises(TrainingInputError, match="missing.json does not exist"):
        run_sft(cfg, data_dir, model, tmp_path / "out")
    with pytest.raises(TrainingInputError, match="bad.json: zero_optimization.stage"):
        run_grpo(cfg, data_dir, model, tmp_path / "out")
    # A TrainJob profile's step pod runs the CPU image: the file is the train image's, checked on the nodes.
    from sifthinker.training.preflight import check_deepspeed, preflight

    assert check_deepspeed(str(tmp_path / "missing.json"))
    cfg.platform.train_job.enabled = True
    preflight("sft", cfg, data_dir, model)


def test_preflight_stops_use_vllm_beside_a_vllm_that_trl_does_not_support(tmp_path):
    import inspect

    import trl
    from trl import import_utils

    lo, hi = TRL_VLLM_RANGE
    source = inspect.getsource(import_utils.is_vllm_available)
    assert f'Version("{lo}")' in source and f'Version("{hi}")' in source  # the installed TRL's own range
    cfg = make_cfg(tmp_path)
    cfg.grpo.use_vllm = True
    (problem,) = check_vllm(cfg, "0.32.0")
    assert "vLLM 0.32.0" in problem and f"TRL {trl.__version__}" in problem and f"{lo} to {hi}" in problem
    assert check_vllm(cfg, "0.31.0+cpu") == [] and check_vllm(cfg, hi) == []
    assert len(check_vllm(cfg, "0.21.1")) == 1
    cfg.grpo.use_vllm = False
    assert check_vllm(cfg, "0.32.0") == []


# ---- training ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sft_with_lora_under_zero3_on_two_processes_merges_a_loadable_model(data_dir, base_model, tmp_path,
                                                                              monkeypatch):
    from safetensors import safe_open

    from sifthinker.training.sft import run_sft

    monkeypatch.setenv("SIFTHINKER_NPROC", "2")
    cfg = make_cfg(tmp_path)
    cfg.sft.deepspeed, cfg.sft.lora = str(ZERO3), LoraConfig(r=8, alpha=16)
    # 3 per rank x 2 ranks = all 6 records in every step: the loss of one batch, step after step
    cfg.sft.learning_rate, cfg.sft.warmup_ratio, cfg.sft.per_device_batch_size = 5e-2, 0.0, 3
    cfg.sft.logging_steps = 1
    res = run_sft(cfg, data_dir, base_model, tmp_path / "sft-zero3", max_steps=4)
    losses = [row["loss"] for row in res.history if "loss" in row]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert _params(cfg, res.mlflow_run_id)["world_size"] == "2"
    with safe_open(res.output_dir / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    with safe_open(base_model / "model.safetensors", "pt") as f:
        assert keys == set(f.keys())  # merged: the base's tensors, no adapter
    model, _ = load_model(res.output_dir, cfg)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


GRPO_SCRIPT = """
import json, sys
from pathlib import Path
from sifthinker.config.run_config import RunConfig
from sifthinker.training.grpo import run_grpo
recipe, data, model, out = sys.argv[1:5]
res = run_grpo(RunConfig.load(recipe), Path(data), model, Path(out), max_steps=6)
Path(out).with_suffix(".json").write_text(json.dumps({"history": res.history, "run": res.mlflow_run_id}))
"""


@pytest.mark.slow
def test_grpo_under_zero3_resumes_after_sigkill_and_stores_whole_group_means(data_dir, sft_model, tmp_path):
    cfg = make_cfg(tmp_path)
    g = cfg.grpo
    g.deepspeed = str(ZERO3)
    # 4 completions per prompt, 2 per rank: every group is split across the two ranks
    g.num_items, g.num_generations, g.per_device_batch_size, g.gradient_accumulation_steps = 6, 4, 2, 1
    g.max_completion_length, g.learning_rate, g.epochs = 128, 1e-3, 1  # one visit per item: reward = s
    g.temperature = 1.2  # answers that differ within a group, or whole- and half-group means would agree
    g.save_steps, g.sample_steps = 2, 0
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cfg.to_yaml())
    out = tmp_path / "model"
    cmd = [sys.executable, "-c", GRPO_SCRIPT, str(recipe), str(data_dir), str(sft_model), str(out)]
    env = {**os.environ, "SIFTHINKER_NPROC": "2"}
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        # one nice step below this watcher, so that on a busy box it still sees the checkpoint in time
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: os.nice(5))
    deadline = time.monotonic() + 600
    while not (done := list((tmp_path / "work" / "checkpoints").glob(f"*/checkpoint-*/{MARKER}"))):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # At the first complete checkpoint (2, or 4 on a slow box), every process of the launch at once: torchrun
    # starts its workers in sessions of their own, so killing the launcher's group alone leaves them training.
    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    ckpt = max((p.parent for p in done), key=lambda p: int(p.name.split("-")[1]))
    step = int(ckpt.name.split("-")[1])
    assert step in (2, 4), f"killed too late: {ckpt.name}"
    assert list(ckpt.glob("global_step*/*zero_pp_rank_1*")), sorted(p.name for p in ckpt.rglob("*"))  # ZeRO-3
    with log.open("a") as f:
        assert subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900).returncode == 0, \
            log.read_text()[-3000:]
    assert f"resuming at step {step} of 6" in log.read_text()
    result = json.loads(out.with_suffix(".json").read_text())
    history = result["history"]
    assert [row["step"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert _params(cfg, result["run"])["world_size"] == "2"
    # P2: every step is one prompt's group of 4, two completions on each rank. Its logged answer reward
    # (TRL's mean over all 4) must be what rank 0 stored for that prompt: the whole group's mean.
    logged = sorted(row["rewards/answer_reward/mean"] for row in history)
    store = SQLiteProgressStore(tmp_path / "work" / "progress.sqlite")
    stored = sorted(v for _, v in store._connect().execute("SELECT key, value FROM progress").fetchall())
    assert len(stored) == 6 and stored == pytest.approx(logged, abs=1e-6)
    assert any(row["rewards/answer_reward/std"] > 0 for row in history)  # some group's answers differ
    load_model(out, cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_from_pet_variables_join_one_zero2_group(data_dir, sft_model, tmp_path):
    """Kubeflow Trainer gives each node's pod only PET_* variables; trainjob.worker_command must honour them."""
    from sifthinker.training.trainjob import JobFiles, worker_command

    zero2 = json.loads(ZERO3.read_text())
    zero2["zero_optimization"] = {k: v for k, v in zero2["zero_optimization"].items() if not k.startswith("stage3")}
    zero2["zero_optimization"]["stage"] = 2
    (tmp_path / "zero2.json").write_text(json.dumps(zero2))
    cfg = make_cfg(tmp_path)
    cfg.sft.deepspeed, cfg.sft.learning_rate, cfg.sft.warmup_ratio = str(tmp_path / "zero2.json"), 1e-2, 0.0
    cfg.sft.logging_steps = 1
    files = JobFiles(local=tmp_path / "job", remote=PurePosixPath(tmp_path / "job"))
    files.local.mkdir()
    Path(files.recipe).write_text(cfg.to_yaml())
    cmd = worker_command("sft", files, str(data_dir), str(sft_model), max_steps=2)
    assert cmd[0] == "python"
    cmd[0] = sys.executable
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {**os.environ, "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(node),
               "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu",
               "SIFTHINKER_WORK_DIR": str(cfg.work_path)}
        log = tmp_path / f"node{node}.txt"
        procs.append((subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        assert proc.wait(600) == 0, log.read_text()[-3000:]
    result = json.loads(Path(files.result).read_text())
    assert len(result["history"]) == 2
    assert _params(cfg, result["mlflow_run_id"])["world_size"] == "2"  # one group of both nodes
    load_model(files.out, cfg)
