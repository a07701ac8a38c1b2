"""Trainer callbacks: per-step metrics to the active MLflow run, a history for TrainResult, progress lines.

The trainers run with `report_to=[]`: transformers' own MLflow integration would open its own run and
log everything twice. This callback logs into whatever run `tracking.stage_run` opened instead.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from sifthinker.runtime import events

log = logging.getLogger(__name__)

# MLflow metric names allow alphanumerics, _ - . space : and /; anything else is replaced.
_BAD_METRIC_CHARS = re.compile(r"[^0-9A-Za-z_\-. :/]")
# Shown first in a progress line, when present (TRL's names); everything else follows alphabetically.
_HEADLINE = ("loss", "reward", "reward_std", "kl", "grad_norm", "learning_rate", "entropy",
             "mean_token_accuracy", "completions/mean_length")


def mlflow_name(key: str) -> str:
    """A metric key with the characters MLflow rejects replaced by '_'."""
    return _BAD_METRIC_CHARS.sub("_", key)


def _numeric(logs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in logs.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")


class MetricsCallback(TrainerCallback):
    """Collects each log call as a history row, logs it to MLflow, prints one progress line.

    `history` rows are `{"step": int, "epoch": float, **metrics}`. The final summary log of
    `Trainer.train()` (train_runtime, train_loss, ...) is kept in `summary` instead of the history.
    """

    def __init__(self, stage: str, mlflow_logging: bool = True,
                 printer: Callable[[str], None] | None = None) -> None:
        self.stage = stage
        self.mlflow_logging = mlflow_logging
        self.history: list[dict[str, float]] = []
        self.summary: dict[str, float] = {}
        self._printer = printer or (lambda line: print(line, file=sys.stderr, flush=True))
        self._t0 = time.monotonic()
        self.sender: Any = None  # a MetricsSender (sifthinker.training.metrics_sender): logs survive an outage

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        self._t0 = time.monotonic()
        if not getattr(state, "is_world_process_zero", True):
            return
        done = int(getattr(state, "global_step", 0) or 0)
        if done:  # resumed: the checkpoint's log history holds the steps already trained
            self._printer(f"[{self.stage}] resuming at step {done} of {state.max_steps}")
            self.replay(state.log_history, done)
        else:
            self._printer(f"[{self.stage}] training: {state.max_steps} steps")

    def replay(self, log_history: list[dict[str, Any]], upto: int) -> None:
        """Steps logged before a checkpoint: into the history and this stage run's MLflow series."""
        for entry in log_history:
            metrics = _numeric({k: v for k, v in entry.items() if k != "step"})
            step = int(entry.get("step", 0))
            if not metrics or step > upto or "train_runtime" in metrics:
                continue
            self.history.append({"step": float(step), "epoch": float(metrics.get("epoch", 0.0)), **metrics})
            self._log_mlflow(metrics, step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        metrics = _numeric(logs or {})
        if not metrics or not getattr(state, "is_world_process_zero", True):  # rank 0 speaks for all
            return
        if "train_runtime" in metrics:  # Trainer's end-of-training summary, not a step: the stage logs
            self.summary.update(metrics)  # it with its final metrics
            return
        row = {"step": float(state.global_step), "epoch": float(state.epoch or 0.0), **metrics}
        self.history.append(row)
        self._log_mlflow(metrics, state.global_step)
        shown = [k for k in _HEADLINE if k in metrics] + sorted(k for k in metrics if k not in _HEADLINE)
        shown = [k for k in shown if k != "epoch"][:8]
        elapsed = time.monotonic() - self._t0
        body = " ".join(f"{k}={_fmt(metrics[k])}" for k in shown)
        self._printer(f"[{self.stage}] step {state.global_step}/{state.max_steps} "
                      f"epoch {float(state.epoch or 0):.2f} {body} ({elapsed:.0f}s)")
        headline = " ".join(f"{k}={_fmt(metrics[k])}" for k in shown[:2])
        events.progress(self.stage, int(state.global_step), int(state.max_steps or 0) or None, note=headline)

    def _log_mlflow(self, metrics: dict[str, float], step: int) -> None:
        if not self.mlflow_logging:
            return
        import mlflow

        if mlflow.active_run() is None:
            return
        clean = {mlflow_name(k): v for k, v in metrics.items()}
        if self.sender is not None:
            self.sender.put(clean, int(step))
            return
        try:
            mlflow.log_metrics(clean, step=int(step))
        except Exception as e:  # a tracking hiccup must not kill a training run
            log.warning("could not log metrics to MLflow: %s", e)
