"""What a container run gives each step (pipelines/run.py, ``step_environments``) and how the local platform
starts the serve container (sifthinker.cluster.local_platform), without a container engine. The engine half
(a step's container sees exactly this) is tests/pipelines/test_containers.py."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from sifthinker.config.run_config import RunConfig
from sifthinker.names import STAGES, Env

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"sifthinker-mlflow": {"tracking-uri": "http://127.0.0.1:55000"},
           "sifthinker-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                             "endpoint-url": "http://127.0.0.1:55555"}}
S3_VARS = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:55555"}


@pytest.fixture
def cfg():
    from sifthinker.cluster.local_platform import with_secret_map

    return with_secret_map(RunConfig.load(REPO / "recipes" / "cluster-local.yaml"))


def test_each_step_gets_only_its_own_services_and_nothing_ambient(cfg, monkeypatch):
    from pipelines.run import CONTAINER_EVENTS, CONTAINER_WORK_DIR, step_environments

    for k, v in {"AWS_ACCESS_KEY_ID": "ambient", "AWS_PROFILE": "ambient", "MLFLOW_TRACKING_URI": "file:/ambient",
                 "HF_TOKEN": "ambient"}.items():
        monkeypatch.setenv(k, v)
    envs = step_environments(cfg, SECRETS, "run-1")
    assert set(envs) == set(STAGES)
    own = {Env.PIPELINE_RUN.value: "run-1", Env.WORK_DIR.value: CONTAINER_WORK_DIR, Env.EVENTS.value: CONTAINER_EVENTS}
    mlflow = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:55000"}
    # build-data makes synthetic data and validate-data reads artifacts: no service at all.
    assert envs["build-data"] == own and envs["validate-data"] == own
    # evaluate reads V* from s3://: the S3 keys and the endpoint; the others only MLflow.
    assert envs["evaluate"] == {**own, **mlflow, **S3_VARS}
    for step in ("sft", "grpo-sif", "gate", "register", "deploy"):
        assert envs[step] == {**own, **mlflow}, step


def test_a_missing_secret_key_stops_the_run_as_the_kubelet_would(cfg):
    from pipelines.run import step_environments
    from sifthinker.cluster.step_access import SecretMissing

    with pytest.raises(SecretMissing, match="sifthinker-s3.*AWS_SECRET_ACCESS_KEY"):
        step_environments(cfg, {**SECRETS, "sifthinker-s3": {"AWS_ACCESS_KEY_ID": "k"}}, "run-1")
    # the endpoint is optional (AWS S3 has none): the step starts without it
    no_endpoint = {**SECRETS, "sifthinker-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}
    assert "AWS_ENDPOINT_URL_S3" not in step_environments(cfg, no_endpoint, "run-1")["evaluate"]


def test_the_compiled_tasks_carry_exactly_each_steps_environment(cfg, tmp_path):
    """What kfp's DockerRunner passes to a container is its task's env in the compiled spec, and nothing
    else: so each task's env must be that step's environment, to the variable."""
    from kfp import compiler

    from pipelines.run import step_environments
    from pipelines.sifthinker_pipeline import build_pipeline

    envs = step_environments(cfg, SECRETS, "run-1")
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(cfg, retries=False, step_env=envs), str(out))
    spec = next(d for d in yaml.safe_load_all(out.read_text()) if "deploymentSpec" in d)
    executors = spec["deploymentSpec"]["executors"]
    for step in STAGES:
        env = executors[f"exec-{step}"]["container"].get("env", [])
        assert {e["name"]: e["value"] for e in env} == envs[step], step
        assert len(env) == len(envs[step]), step


def test_a_recipe_with_its_own_secrets_keeps_them(cfg):
    from sifthinker.cluster.local_platform import SECRET_MAP, with_secret_map
    from sifthinker.config.platform_config import SecretEnv

    assert list(cfg.platform.secrets) == list(SECRET_MAP)
    own = [SecretEnv("site-mlflow", {"uri": "MLFLOW_TRACKING_URI"})]
    mine = dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, secrets=own))
    assert with_secret_map(mine).platform.secrets == own


def _isvc(env: list[dict]) -> dict:
    return {"spec": {"predictor": {"containers": [{
        "image": "127.0.0.1:5055/sifthinker/sifthinker-serve-cpu:0.1.0", "command": ["sifthinker"],
        "args": ["serve", "--model", "models:/m/1", "--host", "0.0.0.0", "--port", "8080"], "env": env,
        "volumeMounts": [{"mountPath": "/var/cache/sifthinker", "name": "model-cache"}]}],
        "volumes": [{"name": "model-cache", "emptyDir": {}}]}}}


def test_the_serve_container_is_started_from_the_inference_service():
    from sifthinker.cluster.local_platform import PlatformError, serve_spec

    ref = {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "sifthinker-s3",
                                                                          "key": "AWS_ACCESS_KEY_ID"}}}
    opt = {"name": "AWS_ENDPOINT_URL_S3", "valueFrom": {"secretKeyRef": {"name": "sifthinker-s3", "key": "nope",
                                                                            "optional": True}}}
    spec = serve_spec(_isvc([{"name": "HF_HUB_OFFLINE", "value": "1"}, ref, opt]), SECRETS, 58080)
    assert spec["env"] == {"HF_HUB_OFFLINE": "1", "AWS_ACCESS_KEY_ID": "k"}
    assert spec["args"] == ["serve", "--model", "models:/m/1", "--host", "127.0.0.1", "--port", "58080"]
    assert spec["command"] == ["sifthinker"] and spec["image"].endswith("sifthinker-serve-cpu:0.1.0")
    assert spec["tmpfs"] == ["/var/cache/sifthinker"]  # the pod's emptyDir: writable on the read-only root
    with pytest.raises(PlatformError, match="CreateContainerConfigError"):
        serve_spec(_isvc([ref]), {}, 58080)


def test_cluster_local_images_come_from_the_named_registry(cfg):
    from pipelines.cluster_local import local_images
    from sifthinker.cluster.local_platform import image_registry
    from sifthinker.config.schema import ConfigError

    local = local_images(cfg, "127.0.0.1:5055/sifthinker", "0.1.0")
    assert local.platform.image == "127.0.0.1:5055/sifthinker/sifthinker:0.1.0"
    assert local.serving.runtime_image == "127.0.0.1:5055/sifthinker/sifthinker-serve-cpu:0.1.0"
    assert image_registry(local.platform.image) == ("127.0.0.1:5055", "127.0.0.1:5055/sifthinker")
    with pytest.raises(ConfigError, match="no registry host"):
        image_registry("sifthinker:0.1.0")
