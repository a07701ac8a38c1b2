"""One S3 endpoint for every reader (sifthinker.storage.s3_endpoint), and the per-step environment model
(sifthinker.cluster.step_access), against a real moto S3 server standing in for a site's MinIO.

The endpoint and credentials reach the readers only the way a cluster delivers them: the 7B recipe's
secret keys, resolved for one step by ``container_env``, as the process's environment; nothing ambient.
"""

import os
from pathlib import Path

import pytest

from sifthinker.cluster.step_access import (
    SecretMissing,
    check_cluster_sizes,
    container_env,
    secret_bindings,
    step_access,
    step_requests,
)
from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.serving.storage import fetch_s3
from sifthinker.storage import locations, remote, s3_endpoint

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "sifthinker-benchmarks"


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    return RunConfig.load(ROOT / "recipes" / "qwen2.5-vl-7b-8gpu.yaml")


def site_secrets(endpoint: str | None) -> dict[str, dict[str, str]]:
    s3 = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    if endpoint:
        s3["endpoint-url"] = endpoint
    return {"sifthinker-s3": s3, "sifthinker-mlflow": {"tracking-uri": "http://mlflow.sifthinker.svc:5000"}}


@pytest.fixture
def pod(moto_s3, no_ambient_aws, cfg):
    """The evaluate step's environment from MinIO-style secrets, and nothing else AWS-related."""
    monkeypatch = no_ambient_aws
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    env = container_env(cfg, "evaluate", site_secrets(moto_s3.endpoint))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    c = moto_s3.client()
    c.create_bucket(Bucket=BUCKET)
    c.put_object(Bucket=BUCKET, Key="vstar/items.jsonl", Body=b'{"id": 1}\n')
    return env


def test_the_endpoint_from_the_secret_reaches_every_reader(pod, moto_s3, tmp_path, monkeypatch):
    assert "AWS_ENDPOINT_URL_S3" in pod and not any(k in pod for k in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"))
    # benchmarks and data (sifthinker.storage.locations)
    assert (locations.localize(f"s3://{BUCKET}/vstar", tmp_path / "a") / "items.jsonl").read_bytes() == b'{"id": 1}\n'
    assert locations.fetch_object(f"s3://{BUCKET}/vstar/items.jsonl", tmp_path / "b").read_bytes() == b'{"id": 1}\n'
    out = locations.S3Prefix(f"s3://{BUCKET}/built")
    out.write("shard-0.jsonl", b"x")
    assert out.read("shard-0.jsonl") == b"x"
    # checkpoints (sifthinker.storage.remote)
    ckpt = tmp_path / "checkpoint-10"
    ckpt.mkdir()
    (ckpt / "adapter.bin").write_bytes(b"w" * 10)
    (ckpt / "COMPLETE").write_text("ok")
    assert remote.upload_folder(ckpt, f"s3://{BUCKET}/ckpt/checkpoint-10", last="COMPLETE") == 2
    assert remote.object_exists(f"s3://{BUCKET}/ckpt/checkpoint-10/COMPLETE")
    # model folders (sifthinker.serving.storage)
    assert (fetch_s3(f"s3://{BUCKET}/ckpt/checkpoint-10", tmp_path / "m") / "adapter.bin").read_bytes() == b"w" * 10
    # MLflow's own S3 artifact client, pointed at the same endpoint
    assert s3_endpoint.export_for_mlflow() == moto_s3.endpoint
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == moto_s3.endpoint
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    S3ArtifactRepository(f"s3://{BUCKET}/mlflow/run1").log_artifact(str(ckpt / "adapter.bin"))
    assert "mlflow/run1/adapter.bin" in [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=BUCKET)["Contents"]]


def test_without_the_endpoint_the_readers_go_to_aws(cfg):
    env = container_env(cfg, "evaluate", site_secrets(None))  # the endpoint key is optional: the pod starts
    assert s3_endpoint.endpoint_url(env) is None and s3_endpoint.has_credentials(env)
    assert s3_endpoint.client(env).meta.endpoint_url == "https://s3.amazonaws.com"
    assert s3_endpoint.endpoint_url({"MLFLOW_S3_ENDPOINT_URL": "http://b", "AWS_ENDPOINT_URL": "http://a"}) == "http://a"


def test_least_privilege_and_required_keys(cfg):
    envs = {b.env for b in secret_bindings(cfg, "build-data")}
    assert envs == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"}  # s3:// data, no hub
    assert {b.secret for b in secret_bindings(cfg, "gate")} == {"sifthinker-mlflow"}
    assert secret_bindings(cfg, "validate-data") == []
    assert step_access(cfg, "deploy").kube and not step_access(cfg, "gate").kube
    with pytest.raises(SecretMissing, match="AWS_SECRET_ACCESS_KEY"):
        container_env(cfg, "build-data", {"sifthinker-s3": {"AWS_ACCESS_KEY_ID": "k"}})


def test_bad_platform_settings_are_config_errors(cfg):
    import dataclasses

    from sifthinker.config.platform_config import SecretEnv, StepResources

    unknown = dataclasses.replace(cfg.platform, secrets=[*cfg.platform.secrets, SecretEnv("x", {"k": "WANDB_KEY"})])
    with pytest.raises(ConfigError, match="WANDB_KEY"):
        secret_bindings(dataclasses.replace(cfg, platform=unknown), "gate")
    no_s3 = dataclasses.replace(cfg.platform, secrets=[s for s in cfg.platform.secrets if s.secret != "sifthinker-s3"])
    with pytest.raises(ConfigError, match="s3://sifthinker-data"):
        secret_bindings(dataclasses.replace(cfg, platform=no_s3), "build-data")
    assert step_requests(cfg, "build-data") == (str(cfg.data.workers), f"{8 + 2 * cfg.data.workers}Gi")
    with pytest.raises(ConfigError, match="data.workers: 0"):
        check_cluster_sizes(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=0)))
    few = dataclasses.replace(cfg.platform, requests={"build-data": StepResources(cpu="4")})
    with pytest.raises(ConfigError, match="fewer than data.workers"):
        step_requests(dataclasses.replace(cfg, platform=few), "build-data")
