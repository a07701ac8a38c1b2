"""Submit the pipeline to a Kubeflow Pipelines server, or upload it as a pipeline version, with kfp's Client.

Where the KFP API is: ``host`` (e.g. ``http://localhost:8080`` through a port-forward, or the Kubeflow
gateway ``https://kubeflow.example.com/pipeline``), else ``$KF_PIPELINES_ENDPOINT``, else kfp finds it
through the kube context (in a pod: the in-cluster service; outside: the API server's service proxy).

How it authenticates (:func:`kfp_client`), first match wins:

* ``$KF_PIPELINES_TOKEN``: a bearer token (an OIDC ID token, ``kubectl create token ...``);
* a Kubeflow service-account token file (``$KF_PIPELINES_SA_TOKEN_PATH``, or the projected token at
  ``/var/run/secrets/kubeflow/pipelines/token`` in a Kubeflow notebook or pod);
* ``$KF_PIPELINES_COOKIE``: a session cookie of Kubeflow's auth proxy (``authservice_session=...``);
* otherwise nothing (a port-forward), or the kube context's credentials when there is no host.

Run parameters (``-p key=value``) are checked against the compiled pipeline's own parameter
definitions and converted to their types (:func:`run_arguments`); ``-p recipe=@file.yaml`` reads a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pipelines.run import _slug, _stamp, compile_pipeline
from pipelines.sifthinker_pipeline import pipeline_name
from sifthinker.config.run_config import RunConfig

__all__ = ["ParameterError", "kfp_client", "pipeline_parameters", "run_arguments", "submit_pipeline",
           "upload_pipeline"]

TOKEN_ENV, COOKIE_ENV = "KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIE"
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


class ParameterError(ValueError):
    """A ``-p key=value`` that the pipeline does not take, or whose value is not of the parameter's type."""


def kfp_client(host: str | None = None, namespace: str | None = None, kube_context: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host`` with credentials from the environment (see the module docstring)."""
    import kfp
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    kw: dict[str, Any] = {}
    if namespace:
        kw["namespace"] = namespace
    if kube_context:
        kw["kube_context"] = kube_context
    sa_token = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
    if os.environ.get(TOKEN_ENV):
        kw["existing_token"] = os.environ[TOKEN_ENV]
    elif Path(sa_token).is_file():
        kw["credentials"] = ServiceAccountTokenVolumeCredentials(sa_token)
    elif os.environ.get(COOKIE_ENV):
        kw["cookies"] = os.environ[COOKIE_ENV]
    return kfp.Client(host=host, **kw)


def pipeline_parameters(package: str | Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's parameters: name -> ``{"parameterType", "defaultValue", "description", ...}``."""
    spec = next(d for d in yaml.safe_load_all(Path(package).read_text()) if d)
    return dict(spec["root"].get("inputDefinitions", {}).get("parameters", {}))


def _convert(name: str, kind: str, text: str) -> Any:
    if kind == "STRING":
        if text.startswith("@"):  # -p recipe=@recipes/x.yaml
            path = Path(text[1:])
            if not path.is_file():
                raise ParameterError(f"-p {name}=@{path}: no such file")
            return path.read_text()
        return text
    try:
        if kind == "BOOLEAN":
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind in ("LIST", "STRUCT"):
            value = json.loads(text)
            if not isinstance(value, list if kind == "LIST" else dict):
                raise ValueError(text)
            return value
    except ValueError as e:
        want = {"BOOLEAN": "true or false", "NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number",
                "LIST": "a JSON list", "STRUCT": "a JSON object"}[kind]
        raise ParameterError(f"-p {name}={text}: {name} takes {want}") from e
    raise ParameterError(f"-p {name}: parameters of type {kind} cannot be set from the command line")


def run_arguments(package: str | Path, params: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings as typed run arguments of the compiled pipeline at ``package``."""
    defs = pipeline_parameters(package)
    out: dict[str, Any] = {}
    for item in params:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ParameterError(f"-p {item}: expected key=value")
        if name not in defs:
            raise ParameterError(f"-p {item}: the pipeline has no parameter {name!r} (it takes: {', '.join(sorted(defs))})")
        out[name] = _convert(name, defs[name]["parameterType"], text)
    return out


def _package(cfg: RunConfig, package_path: str | Path | None, tmp: str) -> Path:
    return Path(package_path) if package_path else compile_pipeline(cfg, Path(tmp) / "pipeline.yaml")


def _ui(client: Any, host: str | None) -> str:
    """The UI's base URL, for links (kfp knows it when it found the API itself)."""
    base = host or getattr(client, "_uihost", None) or getattr(getattr(client, "_existing_config", None), "host", "")
    return str(base or "").rstrip("/")


def submit_pipeline(cfg: RunConfig, host: str | None = None, experiment: str | None = None,
                    run_name: str | None = None, namespace: str | None = None,
                    arguments: dict[str, Any] | None = None, params: Iterable[str] = (),
                    package_path: str | Path | None = None, service_account: str | None = None,
                    kube_context: str | None = None, client: Any = None) -> dict[str, str]:
    """Compile (unless ``package_path`` is given) and start a run; ``{"run_id", "url", "experiment"}``.

    ``arguments`` are typed run arguments, ``params`` ``key=value`` strings checked against the
    pipeline's parameters (they win). The run uses ``service_account`` (default:
    ``platform.service_account``; none: KFP's default).
    """
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _package(cfg, package_path, tmp)
        args = {**(arguments or {}), **run_arguments(pkg, params)}
        client = client or kfp_client(host, namespace, kube_context)
        experiment = experiment or cfg.registry.experiment
        run = client.create_run_from_pipeline_package(
            str(pkg), arguments=args, run_name=run_name or f"{_slug(cfg.name)}-{_stamp()}",
            experiment_name=experiment, namespace=namespace,
            service_account=service_account or cfg.platform.service_account,
        )
    return {"run_id": run.run_id, "url": f"{_ui(client, host)}/#/runs/details/{run.run_id}", "experiment": experiment}


def upload_pipeline(cfg: RunConfig, host: str | None = None, name: str | None = None, version: str | None = None,
                    description: str | None = None, namespace: str | None = None,
                    package_path: str | Path | None = None, kube_context: str | None = None,
                    client: Any = None) -> dict[str, str]:
    """Upload the compiled pipeline as a new version of pipeline ``name`` (created on first upload).

    Returns ``{"pipeline_id", "version_id", "name", "version", "url"}``. ``name`` defaults to the
    pipeline's own name (``sifthinker-<recipe>``), ``version`` to ``<recipe>-<time>``.
    """
    name = name or pipeline_name(cfg)
    version = version or f"{_slug(cfg.name)}-{_stamp()}"
    description = description or f"SIFThinker pipeline, recipe {cfg.name}"
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _package(cfg, package_path, tmp)
        client = client or kfp_client(host, namespace, kube_context)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(str(pkg), pipeline_name=name, description=description,
                                              namespace=namespace)
            pipeline_id = pipeline.pipeline_id
        pv = client.upload_pipeline_version(str(pkg), pipeline_version_name=version, pipeline_id=pipeline_id,
                                            description=description)
    return {"pipeline_id": pipeline_id, "version_id": pv.pipeline_version_id, "name": name, "version": version,
            "url": f"{_ui(client, host)}/#/pipelines/details/{pipeline_id}/version/{pv.pipeline_version_id}"}
