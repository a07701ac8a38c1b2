"""MLflow wiring shared by every stage: one tracking URI and experiment per run config.

Each pipeline stage logs its own MLflow run, tagged with the pipeline run id so a reviewer can filter a
whole pipeline run in the UI (`tags.sifthinker.pipeline_run = '...'`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sifthinker.config import RunConfig
from sifthinker.names import Env

PIPELINE_RUN_TAG = "sifthinker.pipeline_run"
STAGE_TAG = "sifthinker.stage"


def configure(cfg: RunConfig) -> str:
    """Point mlflow at the run's tracking store and experiment; returns the experiment id."""
    import mlflow

    from sifthinker import s3_endpoint

    s3_endpoint.export_for_mlflow()  # MLflow's S3 artifact client: the same endpoint as every other reader
    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(Env.MLFLOW_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    # mlflow exports the URI to the environment; undo that so the next config in this process (or a
    # child process) reads its own recipe instead of silently inheriting this store.
    if before is None:
        os.environ.pop(Env.MLFLOW_TRACKING_URI, None)
    else:
        os.environ[Env.MLFLOW_TRACKING_URI] = before
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    if exp is None:
        # A local store needs an explicit artifact location; a server chooses its own.
        loc = None if uri.startswith("http") else Path(cfg.artifact_root).as_uri()
        return mlflow.create_experiment(cfg.registry.experiment, artifact_location=loc)
    return exp.experiment_id


def pipeline_run_id() -> str | None:
    return os.environ.get(Env.PIPELINE_RUN)


@contextlib.contextmanager
def stage_run(cfg: RunConfig, stage: str, params: dict | None = None) -> Iterator[object]:
    """An MLflow run for one stage, tagged with the stage and the pipeline run id."""
    import mlflow

    exp_id = configure(cfg)
    tags = {STAGE_TAG: stage, "sifthinker.recipe": cfg.name}
    if pid := pipeline_run_id():
        tags[PIPELINE_RUN_TAG] = pid
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.name}-{stage}", tags=tags) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield run
