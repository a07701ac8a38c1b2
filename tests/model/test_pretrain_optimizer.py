"""The pre-trainings' optimizer (sifthinker.model.pretrain.make_optimizer): the vision tower's own rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from sifthinker.config.run_config import RunConfig
from sifthinker.model.ground_pretrain import grounding_item
from sifthinker.model.loading import load_model, vision_tower
from sifthinker.model.pretrain import make_optimizer, optimizer_step
from sifthinker.model.tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[2]


def test_the_tower_trains_at_its_own_rate_and_the_schedule_scales_both(tmp_path):
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.model.tiny.hidden_size, cfg.model.tiny.intermediate_size, cfg.model.tiny.pretrain_steps = 32, 64, 0
    cfg.model.freeze_vision = False
    corpus = [" ".join(grounding_item(s, 320, 240)[:2]) for s in range(10)]
    model, _ = load_model(build_tiny_model(cfg, tmp_path / "m", corpus), cfg, for_training=True)
    tower = {id(p) for p in vision_tower(model).parameters()}
    (one,) = make_optimizer(model, 1e-3, 10, 100)[0].param_groups  # the default: one group, as checkpoints hold
    assert one["lr"] == pytest.approx(1e-4)  # warm-up step 1 of 10
    opt, sched, params = make_optimizer(model, 1e-3, 1, 100, vision_lr_scale=0.1)
    lm, vis = opt.param_groups
    assert {id(p) for p in vis["params"]} == tower and not tower & {id(p) for p in lm["params"]}
    assert len(lm["params"]) + len(vis["params"]) == len(params)
    assert vis["lr"] == pytest.approx(lm["lr"] * 0.1)
    for _ in range(50):
        sched.step()
    assert vis["lr"] == pytest.approx(lm["lr"] * 0.1) and lm["lr"] < 1e-3  # one schedule for both
    with pytest.raises(ValueError, match="vision_lr_scale"):
        optimizer_step(model, 1e-3, 1, 10, vision_lr_scale=0.0)
