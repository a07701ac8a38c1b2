"""Training stages: SFT warm-up and GRPO-SIF with TRL, logged to MLflow (see docs/architecture.md).

    run_sft(cfg, train_dir, base_model_dir, out_dir) -> TrainResult
    run_grpo(cfg, train_dir, model_dir, out_dir) -> TrainResult

Names are resolved lazily, so `import sifthinker.training` does not import torch/transformers/TRL.

May import ``sifthinker.cluster``, ``config``, ``data``, ``method``, ``model``, ``registry``, ``rewards``,
``runtime``, ``storage`` and ``names``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainResult": "sifthinker.training.common",
    "run_sft": "sifthinker.training.sft",
    "run_grpo": "sifthinker.training.grpo",
    "MetricsCallback": "sifthinker.training.callbacks",
    "sft_dataset": "sifthinker.training.datasets",
    "grpo_dataset": "sifthinker.training.datasets",
    "load_records": "sifthinker.training.datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sifthinker.training' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
