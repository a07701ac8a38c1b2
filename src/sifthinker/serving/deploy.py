"""Deploy stage: render a KServe ``InferenceService`` for a registered model version, validate it, apply it.

The predictor is a custom container (``cfg.serving.runtime_image``) running ``sifthinker serve`` on port
``cfg.serving.port`` (V2 + OpenAI routes). Where the model files come from:

* a storage URI KServe's storage initializer can fetch (``s3://``, ``gs://``, ``pvc://``, ``https://``,
  ...): set as the container's ``STORAGE_URI`` (KServe's convention for custom containers), downloaded to
  ``/mnt/models`` before the server starts, which then runs ``--model /mnt/models``;
* an MLflow proxied artifact (``mlflow-artifacts:/...``) becomes ``<serving.storage_uri_prefix>/...`` when
  the prefix is set (the prefix is the server's ``--artifacts-destination``, e.g. ``s3://bucket``);
* otherwise the server pulls the pinned version itself (``--model models:/NAME/V`` with
  ``MLFLOW_TRACKING_URI``), which needs a tracking server reachable from the cluster. A local store
  (sqlite / file) cannot serve a cluster: :func:`deploy` refuses to apply such a manifest.

The version is always pinned (``models:/NAME@champion`` is resolved when deploying), so a later
promotion does not silently change a running service; redeploy to roll forward.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from sifthinker import k8s
from sifthinker.config import RunConfig

log = logging.getLogger(__name__)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODEL_MOUNT = "/mnt/models"
MODEL_CACHE = "/var/cache/sifthinker"  # where the server downloads a models:/ URI when it pulls it itself
CONTAINER_NAME = "kserve-container"  # the name KServe's storage initializer injection looks for
ANNOTATION_PREFIX = "sifthinker.io"
KSERVE_STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "hdfs://", "webhdfs://", "http://", "https://", "oci://", "hf://")


class DeployError(RuntimeError):
    """A manifest that cannot be deployed as asked (the message says why and what to set)."""


def storage_uri_for(cfg: RunConfig, source: str) -> str | None:
    """A URI KServe's storage initializer can download for a model version ``source``, or None."""
    if source.startswith("mlflow-artifacts:"):
        prefix = cfg.serving.storage_uri_prefix
        if not prefix:
            return None
        path = urlparse(source).path.lstrip("/")
        return f"{prefix.rstrip('/')}/{path}"
    if source.startswith(KSERVE_STORAGE_SCHEMES):
        return source
    return None


def _version_fields(cfg: RunConfig, model_version: Any) -> tuple[str, str]:
    if isinstance(model_version, str | int):
        return cfg.registry.model_name, str(model_version)
    return str(getattr(model_version, "name", cfg.registry.model_name)), str(model_version.version)


def _resources(cfg: RunConfig) -> dict:
    gpu = cfg.serving.gpu
    g = cfg.platform.gpu
    cpu = (g.cpu if gpu and g.cpu else None) or ("4" if gpu else "1")
    memory = (g.memory if gpu and g.memory else None) or ("32Gi" if gpu else "4Gi")
    res: dict[str, dict] = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}
    if gpu:
        res["requests"][g.resource] = str(gpu)
        res["limits"][g.resource] = str(gpu)
    return res


def render_inference_service(
    cfg: RunConfig, storage_uri: str | None, model_version: Any, source: str | None = None
) -> dict:
    """The InferenceService for one model version.

    ``model_version`` is a registry version (``RegisteredVersion`` / MLflow ``ModelVersion``, anything with
    ``name`` and ``version``) or a version string of ``cfg.registry.model_name``. ``storage_uri`` None makes
    the container pull ``models:/NAME/V`` from ``cfg.tracking_uri`` itself.
    """
    name, version = _version_fields(cfg, model_version)
    port = cfg.serving.port
    model_arg = MODEL_MOUNT if storage_uri else f"models:/{name}/{version}"
    args = [
        "serve", "--model", model_arg, "--name", cfg.serving.name,
        "--host", "0.0.0.0", "--port", str(port), "--max-new-tokens", str(cfg.serving.max_new_tokens),
    ]  # fmt: skip
    env: dict[str, dict] = {}

    def put(key: str, value: str | None = None, secret: tuple[str, str] | None = None) -> None:
        if secret:
            env[key] = {"name": key, "valueFrom": {"secretKeyRef": {"name": secret[0], "key": secret[1]}}}
        else:
            env[key] = {"name": key, "value": value}

    put("HF_HUB_OFFLINE", "1")
    put("SIFTHINKER_RECIPE_YAML", cfg.to_yaml())
    put("SIFTHINKER_WORK_DIR", "/tmp/sifthinker")  # the serving image runs as uid 1000: a writable place
    if storage_uri:
        put("STORAGE_URI", storage_uri)
    else:
        put("MLFLOW_TRACKING_URI", cfg.tracking_uri)
        put("SIFTHINKER_MODEL_CACHE", MODEL_CACHE)
    for k, v in cfg.platform.env.items():
        put(k, str(v))
    for s in cfg.platform.secrets:
        for key, var in s.env.items():
            put(var, secret=(s.secret, key))

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": cfg.serving.runtime_image,
        "command": ["sifthinker"],
        "args": args,
        "env": list(env.values()),
        "ports": [{"containerPort": port, "name": "http1", "protocol": "TCP"}],
        "resources": _resources(cfg),
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{cfg.serving.name}/ready", "port": port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
    }
    predictor: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 1, "timeout": 600, "containers": [container]}
    volumes: list[dict] = []
    mounts: list[dict] = []
    if not storage_uri:
        volumes.append({"name": "model-cache", "emptyDir": {}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE})
    if cfg.serving.service_account:
        predictor["serviceAccountName"] = cfg.serving.service_account
    g = cfg.platform.gpu
    if cfg.serving.gpu:
        if g.node_selector:
            predictor["nodeSelector"] = dict(g.node_selector)
        if g.tolerations:
            predictor["tolerations"] = [
                {k: v for k, v in dataclasses.asdict(t).items() if v is not None} for t in g.tolerations
            ]
        if g.shm_size:
            volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": g.shm_size}})
            mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if volumes:
        predictor["volumes"] = volumes
        container["volumeMounts"] = mounts

    annotations = {
        f"{ANNOTATION_PREFIX}/model-name": name,
        f"{ANNOTATION_PREFIX}/model-version": version,
        f"{ANNOTATION_PREFIX}/model-uri": f"models:/{name}/{version}",
        f"{ANNOTATION_PREFIX}/recipe": cfg.name,
    }
    if source:
        annotations[f"{ANNOTATION_PREFIX}/model-source"] = source
    if storage_uri:
        annotations[f"{ANNOTATION_PREFIX}/storage-uri"] = storage_uri
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": cfg.serving.name,
            "namespace": cfg.serving.namespace,
            "labels": {
                "app.kubernetes.io/name": "sifthinker",
                "app.kubernetes.io/component": "predictor",
                "app.kubernetes.io/part-of": "sifthinker",
                f"{ANNOTATION_PREFIX}/model-version": version,
            },
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def _cluster_reachable(uri: str) -> bool:
    host = urlparse(uri).hostname or ""
    return uri.startswith(("http://", "https://", "databricks")) and host not in ("localhost", "127.0.0.1", "::1")


def deploy(cfg: RunConfig, model_uri: str, apply: bool = False, out_dir: str | Path | None = None) -> dict:
    """Render, validate (against the CRD in ``CRD_DIR``) and write the InferenceService for ``model_uri``.

    ``model_uri`` is ``models:/NAME@alias`` or ``models:/NAME/V`` (pinned to the version it resolves to
    now) or a storage URI KServe can fetch directly (``s3://...``; the version is then ``unversioned``).
    The manifest goes to ``<out_dir>/<serving.name>-inferenceservice.yaml`` (default ``<work>/deploy``).
    With ``apply=True`` it is applied with ``kubectl apply -f`` (create or patch; ``$KUBECTL`` overrides
    the binary).
    """
    from sifthinker import registry

    problem = None
    if model_uri.startswith("models:/"):
        mv = registry.get_version(cfg, model_uri)
        source = mv.source
        storage_uri = storage_uri_for(cfg, source)
        if storage_uri is None and not _cluster_reachable(cfg.tracking_uri):
            problem = (
                f"version {mv.name}/{mv.version} lives at {source} and the tracking store {cfg.tracking_uri} is "
                "local: a cluster can reach neither. Register into a tracking server with S3 artifacts and set "
                "serving.storage_uri_prefix, or use a remote tracking URI."
            )
        version: Any = mv
    elif model_uri.startswith(KSERVE_STORAGE_SCHEMES):
        source, storage_uri, version = model_uri, model_uri, "unversioned"
    else:
        raise DeployError(f"cannot deploy {model_uri!r}: give models:/NAME@alias, models:/NAME/V or a storage URI")

    manifest = render_inference_service(cfg, storage_uri, version, source=source)
    if problem:
        manifest["metadata"]["annotations"][f"{ANNOTATION_PREFIX}/warning"] = problem
    k8s.validate(manifest)

    out = Path(out_dir) if out_dir else cfg.path("deploy")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cfg.serving.name}-inferenceservice.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    log.info("wrote %s (%s)", path, manifest["metadata"]["annotations"][f"{ANNOTATION_PREFIX}/model-uri"])
    if problem:
        log.warning(problem)
    if apply:
        if problem:
            raise DeployError(problem)
        kubectl_apply(path)
    return manifest


def kubectl_apply(path: str | Path) -> str:
    """``kubectl apply -f PATH`` (``$KUBECTL`` overrides the binary); returns kubectl's output."""
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        raise DeployError("kubectl not found (install it or set KUBECTL)")
    proc = subprocess.run([kubectl, "apply", "-f", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise DeployError(f"kubectl apply -f {path} failed ({proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}")
    log.info("%s", proc.stdout.strip())
    return proc.stdout
