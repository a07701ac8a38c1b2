"""Shared pytest fixtures. Server fixtures (MLflow, moto S3, serving) live in fixtures_servers.py."""

from fixtures_servers import mlflow_server, moto_s3, serving_server, tiny_model_dir  # noqa: F401
