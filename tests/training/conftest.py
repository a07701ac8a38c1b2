"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_cfg, make_records

from sifthinker.model import build_tiny_model, corpus_from_records
from sifthinker.training.datasets import load_records


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixture-data")
    make_records(root)
    return root


@pytest.fixture(scope="module")
def base_model(data_dir, tmp_path_factory) -> Path:
    cfg = make_cfg(tmp_path_factory.mktemp("cfg"))
    corpus = list(corpus_from_records(load_records(data_dir)))
    return build_tiny_model(cfg, tmp_path_factory.mktemp("base") / "model", corpus)

