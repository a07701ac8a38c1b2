"""The tiny base's pre-training (sifthinker.model.base_pretrain), probe, short-answer items and export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sifthinker.config.run_config import RunConfig
from sifthinker.model.base_card import export_base, sha256
from sifthinker.model.base_pretrain import (
    STATE_FILE,
    STRETCH_SPAN,
    TRAIN_SEED,
    check_seed_range,
    item_seeds,
    pretrain_base,
)
from sifthinker.model.base_probe import PROBE_SEED, first_box
from sifthinker.model.loading import load_model
from sifthinker.model.short_answer import KINDS, short_item
from sifthinker.scenes.generate import derive_seed
from sifthinker.scenes.model import COLORS, SHAPES

REPO = Path(__file__).resolve().parents[2]
W, H = 320, 240
RECIPE = {  # the smallest run that goes through every part: 4 steps of batch 2, a copy step, a probe
    "name": "tiny-base-test",
    "data": {"source": "synthetic", "seed": 0},
    "model": {"base": "tiny", "min_pixels": 3136, "max_pixels": 12544,
              "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "rope_theta": 10.0}},
    "pretrain": {"steps": 4, "batch_size": 2, "warmup": 2, "copy_every": 2, "copy_init_steps": 2,
                 "corpus_records": 4, "checkpoint_minutes": 100, "probe_every": 4, "probe_items": 1,
                 "log_every": 1},
}


def _recipe(tmp: Path, **pretrain) -> Path:
    data = json.loads(json.dumps(RECIPE))
    data["work_dir"] = str(tmp / "work")
    data["pretrain"].update(pretrain)
    path = tmp / f"recipe-{len(list(tmp.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _reuse_start(src: Path, dst: Path) -> None:
    """Give a run folder another's corpus and initial model (what a fresh run builds first)."""
    dst.mkdir(parents=True)
    shutil.copy(src / "corpus.json", dst / "corpus.json")
    shutil.copytree(src / "init", dst / "init")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("base")
    recipe = _recipe(tmp)
    res = pretrain_base(RunConfig.load(recipe), tmp / "a", recipe=str(recipe))
    assert res["step"] == 4
    return tmp, recipe


def test_short_answer_items_ask_each_kind_with_answers_of_its_type():
    names = {f"{c} {s}" for c in COLORS for s in SHAPES}
    for kind in KINDS:
        answers = set()
        for seed in range(12):
            q, a, (rgb, depth), got = short_item(seed, W, H, kind)
            assert got == kind and rgb.size == depth.size == (W, H)
            answers.add(a)
            if kind in ("nearer", "larger", "left"):  # an option question: one of the two names asked
                assert a in names and f"the {a}" in q
        assert answers <= {"colour": set(COLORS), "shape": set(SHAPES), "existence": {"yes", "no"},
                           "count": {str(n) for n in range(1, 9)}}.get(kind, names), (kind, answers)
        assert len(answers) > 1, kind  # not one constant answer
    assert short_item(3, W, H, "count")[:2] == short_item(3, W, H, "count")[:2]  # deterministic per seed
    with pytest.raises(ValueError, match="unknown short-answer kind"):
        short_item(0, W, H, "weight")


def test_training_seeds_stay_apart_from_the_probe_and_the_data_builder():
    cfg = RunConfig.load(REPO / "recipes" / "tiny-base.yaml")
    check_seed_range(cfg)
    last = item_seeds(cfg, cfg.pretrain.steps)[-1]
    assert TRAIN_SEED <= item_seeds(cfg, 1)[0] and last < TRAIN_SEED + STRETCH_SPAN < PROBE_SEED
    cfg.pretrain.seed = 1
    assert item_seeds(cfg, 1)[0] > last  # a new stretch seed: new scenes
    cfg.pretrain.seed = 20
    with pytest.raises(ValueError, match="probe"):
        check_seed_range(cfg)
    # The data builder's scenes (train and eval split) have 63-bit hashed seeds, far above both ranges.
    assert min(derive_seed(s, i, a) for s in (0, 100_000) for i in range(300) for a in range(3)) > 100 * PROBE_SEED


@pytest.mark.slow  # trains a tiny model
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(straight_run):
    tmp, recipe = straight_run
    _reuse_start(tmp / "a", tmp / "b")
    cfg = RunConfig.load(recipe)
    assert pretrain_base(cfg, tmp / "b", stop_after=2)["step"] == 2
    res = pretrain_base(cfg, tmp / "b")
    assert res["step"] == 4 and res["history"][-1]["steps"] == 4 and len(res["history"]) == 1
    assert [r["step"] for r in res["history"][-1]["resumed"]] == [2]
    a, b = (load_file(tmp / r / "checkpoint" / "model.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The probe went to the run's MLflow store, per scene size and per short-answer kind.
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'a' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment).experiment_id])
    assert {"loss", "ground/3-8/acc50", "ground/1/iou", "short/colour/acc", "short/acc"} <= run.data.metrics.keys()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "ground/3-8/iou")] == [4]


@pytest.mark.slow  # trains a tiny model
def test_a_killed_run_resumes_at_its_checkpoint(straight_run):
    tmp, _ = straight_run
    recipe = _recipe(tmp, steps=30, checkpoint_minutes=0.0001, probe_every=1000)  # a checkpoint every step
    _reuse_start(tmp / "a", tmp / "c")
    cmd = [str(Path(sys.executable).parent / "sifthinker"), "model", "pretrain-base", "--recipe", str(recipe),
           "--out", str(tmp / "c")]
    env = {**os.environ, "SIFTHINKER_TORCH_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp / "c" / "checkpoint" / STATE_FILE
    deadline = time.monotonic() + 300
    while not (state.is_file() and torch.load(state, weights_only=False)["step"] >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(tmp / "c" / "checkpoint" / STATE_FILE, weights_only=False)["step"]
    assert 2 <= killed_at < 30
    done = subprocess.run([*cmd, "--stop-after", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"pre-training steps {killed_at + 1}..{killed_at + 2} of 30" in done.stderr
    assert f"pre-trained to step {killed_at + 2}" in done.stdout


@pytest.mark.slow  # trains a tiny model
def test_export_writes_a_small_folder_whose_card_matches_and_init_from_adds_a_stretch(straight_run):
    tmp, recipe = straight_run
    cfg = RunConfig.load(recipe)
    card = export_base(tmp / "a", tmp / "base", cfg, probe_items=1, recipe=str(recipe))
    folder = tmp / "base"
    assert card["sha256"] == sha256(folder / "model.safetensors")
    assert json.loads((folder / "base_card.json").read_text()) == card
    assert card["sha256"] in (folder / "README.md").read_text() and card["total_steps"] == 4
    assert all(t.dtype == torch.float16 for t in load_file(folder / "model.safetensors").values())
    model, _ = load_model(folder, cfg)  # the same path as a hub checkpoint
    assert next(model.parameters()).dtype == torch.float32  # a CPU run computes in float32
    # A new stretch from the exported base: the card's history goes on.
    res = pretrain_base(RunConfig.load(_recipe(tmp, steps=1, seed=1)), tmp / "d", init_from=folder)
    assert [s["steps"] for s in res["history"]] == [4, 1]
    assert res["history"][1]["start"] == f"init-from {folder}" and res["history"][1]["seed"] == 1


def test_first_box_reads_the_reply_and_rejects_junk():
    assert first_box('the red cube: [{"bbox_2d":[0.1,0.2,0.3,0.4],"depth":0.5}]') == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert first_box("the red cube: nowhere") is None
