"""The whole container journey (`make cluster-local`, pipelines/cluster_local.py) with real parts, smoke-sized:
`make test-containers` (marker ``containers``; skipped with the reason when no Docker engine answers or the
journey's images are not built). It pushes the images to the local registry, runs every pipeline step in
its own container against MLflow on PostgreSQL and S3, serves from the InferenceService's container, and
asserts on what happened: every step finished as uid 1000, the server holds the runs and the champion,
S3 holds the model and the benchmark data, the served answer carries a SIF trace, and the engine ran the
images the registry serves."""

import dataclasses
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sifthinker.cluster.images import read_env

REPO = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("DOCKER", "docker")
TAG = os.environ.get("SIFTHINKER_IMAGE_TAG", read_env(REPO / "images" / "bases.env")["IMAGE_TAG"])
REGISTRY = os.environ.get("SIFTHINKER_CLUSTER_REGISTRY", "127.0.0.1:5055/sifthinker")
STEPS = ["build-data", "validate-data", "sft", "grpo-sif", "evaluate:sif-bench", "evaluate:vstar", "gate", "register",
         "deploy"]


def _problem() -> str | None:
    if not shutil.which(DOCKER.split()[0]):
        return f"no container engine CLI ({DOCKER}) on PATH"
    out = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if out.returncode != 0:
        return f"no Docker engine answers ({out.stderr.strip()[:200]})"
    from pipelines.cluster_local import IMAGES

    missing = [n for n in IMAGES if subprocess.run([DOCKER, "image", "inspect", f"{REGISTRY}/{n}:{TAG}"],
                                                   capture_output=True).returncode != 0]
    if missing:
        return f"not built: {missing} (make images IMAGES=... IMAGE_REGISTRY={REGISTRY}; make test-containers does)"
    return None


pytestmark = [pytest.mark.containers, pytest.mark.skipif(bool(_problem()), reason=str(_problem()))]


def _smoke(cfg, work: Path):
    """recipes/cluster-local.yaml at smoke size (minutes on 2 busy cores); V* still read from S3."""
    r = dataclasses.replace
    tiny = r(cfg.model.tiny, pretrain_steps=20)
    return r(cfg, work_dir=str(work), data=r(cfg.data, num_train=32, num_eval=40),
             model=r(cfg.model, tiny=tiny), sft=r(cfg.sft, epochs=1),
             grpo=r(cfg.grpo, num_items=2, num_generations=2, per_device_batch_size=2, max_completion_length=64),
             eval=r(cfg.eval, max_new_tokens=64), serving=r(cfg.serving, max_new_tokens=64),
             gate=r(cfg.gate, thresholds={}))


def test_the_cluster_path_on_one_machine(tmp_path):
    from mlflow import MlflowClient

    from pipelines.cluster_local import cluster_local
    from sifthinker.cluster.local_platform import ARTIFACT_BUCKET, BENCHMARK_BUCKET, registry_digest
    from sifthinker.config.run_config import RunConfig
    from sifthinker.runtime.console import Console

    cfg = _smoke(RunConfig.load(REPO / "recipes" / "cluster-local.yaml"), tmp_path / "work")
    seen: dict = {}

    def check(plat, res):  # before the teardown: the services are still up
        client = MlflowClient(plat.mlflow_uri)
        seen["champion"] = client.get_model_version_by_alias(res.model, "champion").version
        runs = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment).experiment_id])
        seen["stages"] = {r.data.tags.get("sifthinker.stage") for r in runs}
        s3 = plat.s3_client()
        seen["artifacts"] = [o["Key"] for o in s3.list_objects_v2(Bucket=ARTIFACT_BUCKET).get("Contents", [])]
        seen["vstar"] = [o["Key"] for o in s3.list_objects_v2(Bucket=BENCHMARK_BUCKET).get("Contents", [])]
        seen["digests"] = {image: registry_digest(image) for image in res.images}

    lines = io.StringIO()
    res = cluster_local(cfg, Console(lines), tmp_path / "state", REGISTRY, TAG, build=True, docker=DOCKER,
                        check=check)
    printed = lines.getvalue()
    print(printed)  # the stage lines a person would read (shown with -s / on failure)
    # every step ran in its container and wrote its own record as uid 1000
    assert res.run.ran == STEPS, printed
    for task in res.run.tasks.values():
        assert (task.dir / "executor_output.json").stat().st_uid == 1000, task.name
    # the MLflow server (on PostgreSQL) has the stages' runs and the version the pipeline registered, as champion
    assert {"sft", "grpo-sif", "evaluate", "register"} <= seen["stages"], seen["stages"]
    assert seen["champion"] == res.version
    # S3 holds the model's files (through the server's artifact proxy) and the V* data evaluate read from it
    assert any(k.endswith("model.safetensors") or "/model" in k for k in seen["artifacts"]), seen["artifacts"][:20]
    assert any(k.startswith("vstar/") for k in seen["vstar"]) and any(k.startswith("vstar/") for k in res.run.metrics)
    # the serve container answered the openai client with a SIF block
    assert isinstance(res.reply["sif"], dict) and "format_valid" in res.reply["sif"], res.reply
    # the engine ran exactly what the registry serves for each tag
    assert res.images == seen["digests"] and all(d.startswith("sha256:") for d in res.images.values())
    # one line per stage, and the teardown left nothing running
    for word in ("1/7", "3/7", "4/7", "build-data", "grpo-sif", "6/7 serving", "7/7 answer", "tearing down"):
        assert word in printed, (word, printed)
    left = subprocess.run([DOCKER, "ps", "-a", "--filter", "name=sifthinker-local-", "-q"], capture_output=True,
                          text=True).stdout.split()
    assert left == []
