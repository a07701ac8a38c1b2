"""Shared pytest fixtures. Server fixtures (MLflow, moto S3, serving) live in fixtures_servers.py."""

import os
from pathlib import Path

import pytest
from fixtures_servers import mlflow_server, moto_s3, serving_server, tiny_model_dir  # noqa: F401

from sifthinker.names import Env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _mlflow_s3_endpoint_restored():
    """sifthinker.s3_endpoint.export_for_mlflow sets MLFLOW_S3_ENDPOINT_URL for the rest of the process (a
    step's whole life); a test that sets an S3 endpoint must not leave it to the next test."""
    before = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    yield
    if before is None:
        os.environ.pop("MLFLOW_S3_ENDPOINT_URL", None)
    else:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = before


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The KServe/Kubeflow CRD YAMLs: ``$CRD_DIR`` (as CI sets it), else ``../shared/crds`` beside the
    checkout. Only tests may look there; the product reads ``CRD_DIR`` alone. Skips without either."""
    if env := os.environ.get(Env.CRD_DIR):
        return Path(env).resolve()
    beside = REPO.parent / "shared" / "crds"
    if beside.is_dir():
        return beside.resolve()
    pytest.skip(f"CRD schemas not available: set {Env.CRD_DIR} to a folder of CRD YAMLs (or put them in {beside})")


@pytest.fixture
def bad_recipes(tmp_path) -> dict[str, tuple[Path, str]]:
    """Recipes that must not load, with a word the error must contain."""
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: x\ndata:\n  num_train: [1,\n")
    negative = tmp_path / "negative.yaml"
    negative.write_text("data:\n  num_train: -5\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data:\n  num_trian: 5\n")
    return {"malformed": (malformed, "malformed.yaml:"), "negative": (negative, "recipe.data.num_train"),
            "unknown": (unknown, "num_trian"), "missing": (tmp_path / "nope.yaml", "nope.yaml")}


@pytest.fixture
def no_ambient_aws(monkeypatch, tmp_path):
    """A step pod's view of AWS, shared by the cluster-YAML and S3-endpoint tests: only what the pod's environment
    says, no AWS variables, config files or instance metadata."""
    import os

    for k in list(os.environ):
        if k.startswith(("AWS_", "MLFLOW_S3_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch
