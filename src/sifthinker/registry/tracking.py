"""MLflow wiring shared by every stage: one tracking URI and experiment per run config, one run tree per
pipeline run.

MLflow's own conventions: one parent run per pipeline run, named after it (its id is the pipeline run id,
``SIFTHINKER_PIPELINE_RUN``), with one nested run per stage, named after the stage (``build-data``,
``evaluate:sif-bench``, ...). The parent is created by the first stage that logs (``build-data``, which
always runs first) and found again by its tag by every later stage, in whatever process or pod it runs: the
pipeline passes the pipeline run id down to every step, so a cluster run shows the same tree as a local one.
The parent's status and end time follow its stages: RUNNING while one runs, FINISHED (or FAILED) after.

The experiment carries ``mlflow.experimentKind = custom_model_development`` so the MLflow UI opens it in
its model-training view (MLflow 3 otherwise guesses GenAI and files the runs under "Evaluations").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env

PIPELINE_RUN_TAG = "sifthinker.pipeline_run"
STAGE_TAG = "sifthinker.stage"
PIPELINE_STAGE = "pipeline"  # the STAGE_TAG value of a pipeline run's parent run
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # the MLflow UI's "model training" experiment type
_parents: dict[tuple[str, str], str] = {}  # (tracking URI, pipeline run) -> parent run id, this process


def configure(cfg: RunConfig) -> str:
    """Point mlflow at the run's tracking store and experiment; returns the experiment id."""
    import mlflow

    from sifthinker.storage import s3_endpoint

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
        return mlflow.create_experiment(cfg.registry.experiment, artifact_location=loc,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:  # an experiment made before this tag
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp.experiment_id


def pipeline_run_id() -> str | None:
    return os.environ.get(Env.PIPELINE_RUN) or None


def parent_run(cfg: RunConfig, exp_id: str, pipeline_run: str) -> str:
    """The id of ``pipeline_run``'s parent MLflow run: found by its tags, else created (named ``pipeline_run``)."""
    import mlflow

    key = (cfg.tracking_uri, pipeline_run)
    if key in _parents:
        return _parents[key]
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [exp_id], f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}' and tags.`{STAGE_TAG}` = '{PIPELINE_STAGE}'",
        max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        _parents[key] = found[0].info.run_id
    else:
        run = client.create_run(exp_id, run_name=pipeline_run, tags={
            PIPELINE_RUN_TAG: pipeline_run, STAGE_TAG: PIPELINE_STAGE, "sifthinker.recipe": cfg.name})
        _parents[key] = run.info.run_id
    return _parents[key]


def stage_runs(cfg: RunConfig, pipeline_run: str) -> dict[str, str]:
    """``{run name: run id}`` of the stage runs nested under ``pipeline_run``'s parent (empty without one)."""
    import mlflow

    exp_id = configure(cfg)
    try:
        parent = parent_run(cfg, exp_id, pipeline_run)
    except Exception:  # noqa: BLE001 (a lookup for lineage must not fail a stage)
        return {}
    runs = mlflow.MlflowClient().search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.info.run_name: r.info.run_id for r in runs}


@contextlib.contextmanager
def stage_run(cfg: RunConfig, stage: str, params: dict | None = None, part: str = "") -> Iterator[object]:
    """An MLflow run for one stage (``part``: one of its parallel runs, e.g. a benchmark), named
    ``stage`` or ``stage:part``, nested under the pipeline run's parent when there is a pipeline run."""
    import mlflow

    exp_id = configure(cfg)
    tags = {STAGE_TAG: str(stage), "sifthinker.recipe": cfg.name}
    parent = None
    if pid := pipeline_run_id():
        tags[PIPELINE_RUN_TAG] = pid
        parent = parent_run(cfg, exp_id, pid)
        mlflow.MlflowClient().update_run(parent, status="RUNNING")
    name = f"{stage}:{part}" if part else str(stage)
    status = "FAILED"
    try:
        run = mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags, parent_run_id=parent)
        try:
            if params:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            yield run
        except BaseException:
            # The step's own error is the one to report: when the tracking server is what failed, ending the
            # run fails too and would replace it (the run then stays RUNNING on the server).
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")
        status = "FINISHED"
    finally:
        if parent:  # the parent's end time follows its latest stage
            with contextlib.suppress(Exception) if status == "FAILED" else contextlib.nullcontext():
                mlflow.MlflowClient().set_terminated(parent, status=status)
