"""The shipped tiny base (models/sif-tiny-base): it loads like a hub checkpoint, its weights are the ones
its card names, and it passes a small held-out probe above a stated threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sifthinker.config.run_config import RunConfig
from sifthinker.model.base_card import MAX_BYTES, WEIGHTS, folder_bytes, sha256
from sifthinker.model.base_probe import probe_items, run_probe
from sifthinker.model.loading import load_model

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "sif-tiny-base"
# The probe: 20 held-out "Where is X?" items on the data builder's 3-8 object scenes (base_probe's seeds,
# never trained on) and the least the shipped base must score. The base shipped at 2566 steps writes the
# named object's SIF area (1.000 of its card's 40 items; IoU 0.07: it does not point yet, see
# docs/benchmarks.md), so the bar is the format, with room for the 20-item sample. A later export that
# points should raise it to an IoU bar (its card's number less the spread).
PROBE_KEY, METRIC = "ground/3-8", "named"
THRESHOLD = 0.75


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((SHIPPED / "base_card.json").read_text())


def test_the_shipped_weights_are_the_cards_and_small(card):
    assert sha256(SHIPPED / WEIGHTS) == card["sha256"]
    assert folder_bytes(SHIPPED) <= MAX_BYTES
    assert {t.dtype for t in load_file(SHIPPED / WEIGHTS).values()} == {getattr(torch, card["dtype"])}
    assert card["total_steps"] == sum(s["steps"] for s in card["history"]) > 0
    assert card["sha256"] in (SHIPPED / "README.md").read_text()


def test_the_shipped_base_loads_and_passes_its_probe():
    cfg = RunConfig.load(REPO / "recipes" / "tiny-base.yaml")
    model, processor = load_model(SHIPPED, cfg)  # the hub checkpoint's path
    metrics = run_probe(model, processor, probe_items(20, cfg.data.width, cfg.data.height, only=(PROBE_KEY,)))
    assert metrics[f"{PROBE_KEY}/{METRIC}"] >= THRESHOLD, metrics
