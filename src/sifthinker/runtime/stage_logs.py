"""What the stages without a run of their own log into their MLflow stage run (``stage(..., track=True)``).

* build-data: the source settings as params, each split's records and rejections as metrics
  (``<split>/records``, ``<split>/rejected``), the rejection report (the split's ``manifest.json``), and
  each split as an MLflow dataset input (``mlflow.data``: name ``<recipe>-<split>``, its digest, the folder
  as its source).
* validate-data: the Markdown report as an artifact, ``<split>/expectations_met`` and ``/failed``.
* gate: the decision (``passed``, 1 or 0) and every comparison as a table artifact (``gate.json``).
* deploy: the rendered InferenceService manifest as an artifact.

Each function logs into the active run and does nothing without one (a stage run outside MLflow).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

__all__ = ["log_build", "log_deploy", "log_gate", "log_validation"]


def _active() -> bool:
    import mlflow

    return mlflow.active_run() is not None


def log_build(recipe: str, summaries: dict[str, Any]) -> None:
    """``summaries``: ``{split: BuildSummary}`` (sifthinker.data.build)."""
    import mlflow
    import mlflow.data
    import pandas as pd

    if not _active():
        return
    first = next(iter(summaries.values()))
    mlflow.log_params({"source": first.source, "seed": first.seed})
    for split, s in summaries.items():
        mlflow.log_metrics({f"{split}/records": s.num_records, f"{split}/rejected": len(s.rejections)})
        folder = Path(s.out_dir)
        if (folder / "manifest.json").is_file():  # counts per category and the rejections with reasons
            mlflow.log_artifact(str(folder / "manifest.json"), artifact_path=split)
        records = json.loads((folder / "records.json").read_text()) if (folder / "records.json").is_file() else []
        table = pd.DataFrame([{k: r.get(k) for k in ("id", "split", "category", "answer_type", "problem",
                                                      "response", "image")} for r in records])
        with warnings.catch_warnings():  # a local folder matches two of MLflow's source kinds: it says so
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
            ds = mlflow.data.from_pandas(table, source=str(folder.resolve()), name=f"{recipe}-{split}")
        mlflow.log_input(ds, context="training" if split == "train" else "evaluation")


def log_validation(outcome: Any) -> None:
    """``outcome``: the ``SplitsCheck`` of sifthinker.data.checks."""
    import mlflow

    if not _active():
        return
    for split, r in outcome.results.items():
        mlflow.log_metrics({f"{split}/expectations_met": r.checked - len(r.failures),
                            f"{split}/expectations_failed": len(r.failures)})
    mlflow.log_text(outcome.markdown, "data-validation.md")


def log_gate(result: Any) -> None:
    """``result``: the ``GateResult`` of sifthinker.registry.gate; every comparison one row of ``gate.json``."""
    import mlflow

    if not _active():
        return
    mlflow.log_metric("passed", 1.0 if result.passed else 0.0)
    rows: dict[str, list] = {"rule": [], "value": [], "minimum": [], "passed": []}
    for rule, c in result.checked.items():
        rows["rule"].append(rule)
        rows["value"].append(c.get("value"))
        rows["minimum"].append(c.get("min"))
        rows["passed"].append(bool(c.get("passed")))
    mlflow.log_table(rows, artifact_file="gate.json")
    mlflow.log_text(result.summary() + "\n", "gate.txt")


def log_deploy(result: Any) -> None:
    """``result``: the ``DeployResult`` of sifthinker.serving.deploy."""
    import mlflow

    if not _active():
        return
    if result.path is not None and Path(result.path).is_file():
        mlflow.log_artifact(str(result.path))
    mlflow.set_tag("sifthinker.deploy.applied", str(bool(getattr(result, "applied", False))).lower())
