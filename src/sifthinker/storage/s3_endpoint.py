"""The one place that names the S3 endpoint and credential variables and turns them into a client.

Every S3 reader and writer of the library (data and benchmark downloads in :mod:`sifthinker.storage.locations`,
checkpoints in :mod:`sifthinker.storage.remote`, model folders in :mod:`sifthinker.serving.storage`) gets its
client from :func:`client`, and MLflow's own S3 artifact client is pointed at the same endpoint by
:func:`export_for_mlflow`. So a site sets the endpoint once, under any of :data:`ENDPOINT_VARS` (a
cluster: the ``endpoint-url`` key of the S3 secret, see ``pipelines/platform.py``), and every reader goes
to MinIO; with none of them set, boto3 goes to AWS S3.

Why three names: ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL`` are boto3's own (older boto3 releases
ignore them, so the endpoint is passed explicitly); ``MLFLOW_S3_ENDPOINT_URL`` is the only one MLflow
reads. They are read in that order: the most specific wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["CREDENTIAL_VARS", "ENDPOINT_VARS", "MLFLOW_ENDPOINT_VAR", "OPTIONAL_VARS", "client", "endpoint_url",
           "export_for_mlflow", "has_credentials"]

# In order of precedence. The platform maps a secret's endpoint key to the first one.
ENDPOINT_VARS: tuple[str, ...] = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
MLFLOW_ENDPOINT_VAR = "MLFLOW_S3_ENDPOINT_URL"
# What a step that reads s3:// must have (no instance roles or profiles in a pipeline pod).
CREDENTIAL_VARS: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Present on some sites only: the endpoint (absent on AWS S3), a session token, the region.
OPTIONAL_VARS: tuple[str, ...] = (*ENDPOINT_VARS, "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")


def endpoint_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint from the first non-empty variable of :data:`ENDPOINT_VARS`; None: AWS S3."""
    env = os.environ if environ is None else environ
    return next((env[v] for v in ENDPOINT_VARS if env.get(v)), None)


def has_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the access key pair is set (non-empty) in ``environ``."""
    env = os.environ if environ is None else environ
    return all(env.get(v) for v in CREDENTIAL_VARS)


def client(environ: Mapping[str, str] | None = None):
    """A boto3 S3 client on :func:`endpoint_url`; credentials from boto3's usual chain (``environ`` given:
    from ``environ`` only, for reading a step's environment without this process's)."""
    import boto3

    if environ is None:
        return boto3.client("s3", endpoint_url=endpoint_url())
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint_url(environ), region_name=region,
                        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
                        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
                        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None)


def export_for_mlflow(environ: dict[str, str] | None = None) -> str | None:
    """Set ``MLFLOW_S3_ENDPOINT_URL`` from :func:`endpoint_url` when it is unset, so that MLflow's artifact
    client (an ``s3://`` artifact store without the server's proxy) uses the same endpoint as the rest."""
    env = os.environ if environ is None else environ
    url = endpoint_url(env)
    if url and not env.get(MLFLOW_ENDPOINT_VAR):
        env[MLFLOW_ENDPOINT_VAR] = url
    return url
