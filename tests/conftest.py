"""Shared pytest fixtures. Server fixtures (MLflow, moto S3, serving) live in fixtures_servers.py."""

import os
from pathlib import Path

import pytest
from fixtures_servers import mlflow_server, moto_s3, serving_server, tiny_model_dir  # noqa: F401

from sifthinker.names import Env

REPO = Path(__file__).resolve().parents[1]


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
