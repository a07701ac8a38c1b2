"""MLflow 3 logged models for the registry: which metrics a model carries, linking them to the logged
model where the evaluate runs logged them, and reading a version's metrics back.

A version registered before logged models carries ``metric.<name>`` tags instead; :func:`version_metrics`
reads either.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Stage
from sifthinker.registry.lineage import flatten

VERSION_TAGS = ("recipe", "data_fingerprint", "pipeline_run")  # what MLflow has no field for
HEADLINE_METRICS = ("sif-bench/format_validity", "sif-bench/accuracy", "sif-bench/grounding_acc50",
                    "sif-bench/depth_consistency")
PRIMARY_BENCHMARK = "sif-bench"  # its metrics are the gate's bare keys (sifthinker.evaluation.runner)


def model_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics a model carries, each once: ``<benchmark>/<metric>``; a bare key that only
    repeats sif-bench's prefixed one (the gate's shorthand) is dropped."""
    flat = flatten(metrics)
    numeric = {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: v for k, v in numeric.items() if f"{PRIMARY_BENCHMARK}/{k}" not in numeric}


def link_metrics(client, model_id: str, run_id: str, metrics: dict[str, float], pipeline_run: str | None,
                  cfg: RunConfig) -> None:
    """Link ``metrics`` to the logged model: those an ``evaluate:<benchmark>`` run of this pipeline run
    logged are linked where they were logged (same value and time: no second copy on the run); the rest
    are logged on the register run."""
    from mlflow.entities import Metric

    from sifthinker.registry.tracking import stage_runs

    todo = dict(metrics)
    evals = {n: i for n, i in (stage_runs(cfg, pipeline_run) if pipeline_run else {}).items()
             if n.startswith(f"{Stage.EVALUATE}:")}
    for eval_run in evals.values():
        logged = client.get_run(eval_run).data.metrics
        linked = []
        for key in [k for k in todo if k in logged and logged[k] == todo[k]]:
            last = client.get_metric_history(eval_run, key)[-1]
            linked.append(Metric(key, last.value, last.timestamp, last.step, model_id=model_id, run_id=eval_run))
            del todo[key]
        if linked:
            client.log_batch(eval_run, metrics=linked)
    if todo:
        ts = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, ts, 0, model_id=model_id, run_id=run_id)
                                          for k, v in todo.items()])


def logged_model_id(client, mv) -> str | None:
    """The id of the logged model a version was registered from (None for a version without one)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    m = re.search(r"/models/(m-[0-9a-f]+)/artifacts/?$", mv.source or "")
    return m.group(1) if m else None


def version_metrics(client, mv) -> dict[str, float]:
    """A version's metrics: its logged model's (``<benchmark>/<metric>``, with sif-bench's also bare, as
    the gate names them); for a version registered before logged models, its ``metric.<name>`` tags."""
    out: dict[str, float] = {}
    if model_id := logged_model_id(client, mv):
        for m in client.get_logged_model(model_id).metrics or []:
            out[m.key] = float(m.value)
        out.update({k.removeprefix(f"{PRIMARY_BENCHMARK}/"): v for k, v in list(out.items())
                    if k.startswith(f"{PRIMARY_BENCHMARK}/")})
        return out
    for key, raw in (mv.tags or {}).items():
        if key.startswith("metric."):
            with contextlib.suppress(ValueError):  # a non-numeric tag (e.g. a list) is no metric
                out[key.removeprefix("metric.")] = float(raw)
    return out
