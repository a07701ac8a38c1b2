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

The manifest is built with KServe's typed Python models (``kserve.V1beta1InferenceService`` and the
``kubernetes.client`` models) and serialised to a plain dict. Validation needs nothing beside the
repository: the typed models always check it; with ``CRD_DIR`` set it is also checked against the CRD
schema (:mod:`sifthinker.k8s`), and with ``apply=True`` by the cluster (server-side dry run) before the
real apply. :class:`DeployResult` says which ran, in one line.
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
from sifthinker.names import Env

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


@dataclasses.dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` did: the manifest, where it was written (None in a dry run), the one line saying
    which validation ran, and whether it was applied to the cluster."""

    manifest: dict
    path: Path | None
    validation: str
    applied: bool
    warning: str | None = None  # why this manifest cannot serve from a cluster (it is then never applied)

    def headline(self) -> str:
        """One line for the stage's events, e.g. ``applied models:/m/3 as default/sifthinker; validated ...``."""
        md = self.manifest["metadata"]
        uri = md["annotations"][f"{ANNOTATION_PREFIX}/model-uri"]
        did = "applied" if self.applied else "rendered (dry run)" if self.path is None else "wrote"
        return f"{did} {uri} as {md.get('namespace')}/{md['name']}; {self.validation}"

    def to_dict(self) -> dict:
        """Plain JSON data (the KFP component's output, the CLI)."""
        md = self.manifest["metadata"]
        return {
            "name": md["name"],
            "namespace": md.get("namespace"),
            "model_uri": md["annotations"][f"{ANNOTATION_PREFIX}/model-uri"],
            "path": str(self.path) if self.path else None,
            "validation": self.validation,
            "applied": self.applied,
            "warning": self.warning,
            "manifest": self.manifest,
        }


# ---- the typed InferenceService ----------------------------------------------------------------------
def _resources(cfg: RunConfig, client: Any):
    gpu = cfg.serving.gpu
    g = cfg.platform.gpu
    cpu = (g.cpu if gpu and g.cpu else None) or ("4" if gpu else "1")
    memory = (g.memory if gpu and g.memory else None) or ("32Gi" if gpu else "4Gi")
    amounts = {"cpu": cpu, "memory": memory} | ({g.resource: str(gpu)} if gpu else {})
    return client.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _env(cfg: RunConfig, storage_uri: str | None, client: Any) -> list:
    env: dict[str, Any] = {}  # by name: a later setting (recipe env, secrets) replaces an earlier one

    def put(key: str, value: str | None = None, secret: tuple[str, str] | None = None) -> None:
        key = str(key)  # a plain str: YAML cannot write the names.Env members themselves
        if secret:
            ref = client.V1SecretKeySelector(name=secret[0], key=secret[1])
            env[key] = client.V1EnvVar(name=key, value_from=client.V1EnvVarSource(secret_key_ref=ref))
        else:
            env[key] = client.V1EnvVar(name=key, value=value)

    put("HF_HUB_OFFLINE", "1")
    put(Env.RECIPE_YAML, cfg.to_yaml())
    put(Env.WORK_DIR, "/tmp/sifthinker")  # the serving image runs as uid 1000: a writable place
    if storage_uri:
        put("STORAGE_URI", storage_uri)
    else:
        put(Env.MLFLOW_TRACKING_URI, cfg.tracking_uri)
        put(Env.MODEL_CACHE, MODEL_CACHE)
    for k, v in cfg.platform.env.items():
        put(k, str(v))
    for s in cfg.platform.secrets:
        for key, var in s.env.items():
            put(var, secret=(s.secret, key))
    return list(env.values())


def build_inference_service(
    cfg: RunConfig, storage_uri: str | None, model_version: Any, source: str | None = None,
    warning: str | None = None,
):
    """The ``kserve.V1beta1InferenceService`` for one model version (arguments as
    :func:`render_inference_service`). The models refuse a missing required field (ValueError)."""
    import kserve  # the platform extra; imported here so the rest of the module works without it
    from kubernetes import client
    name, version = _version_fields(cfg, model_version)
    port = cfg.serving.port
    model_arg = MODEL_MOUNT if storage_uri else f"models:/{name}/{version}"
    args = [
        "serve", "--model", model_arg, "--name", cfg.serving.name,
        "--host", "0.0.0.0", "--port", str(port), "--max-new-tokens", str(cfg.serving.max_new_tokens),
    ]  # fmt: skip
    volumes, mounts = [], []
    if not storage_uri:
        volumes.append(client.V1Volume(name="model-cache", empty_dir=client.V1EmptyDirVolumeSource()))
        mounts.append(client.V1VolumeMount(name="model-cache", mount_path=MODEL_CACHE))
    g = cfg.platform.gpu
    gpu = cfg.serving.gpu
    if gpu and g.shm_size:
        shm = client.V1EmptyDirVolumeSource(medium="Memory", size_limit=g.shm_size)
        volumes.append(client.V1Volume(name="dshm", empty_dir=shm))
        mounts.append(client.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    container = client.V1Container(
        name=CONTAINER_NAME,
        image=cfg.serving.runtime_image,
        command=["sifthinker"],
        args=args,
        env=_env(cfg, storage_uri, client),
        ports=[client.V1ContainerPort(container_port=port, name="http1", protocol="TCP")],
        resources=_resources(cfg, client),
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path=f"/v2/models/{cfg.serving.name}/ready", port=port),
            period_seconds=10,
            failure_threshold=3,
        ),
        volume_mounts=mounts or None,
    )
    tolerations = [
        client.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in g.tolerations
    ]
    predictor = kserve.V1beta1PredictorSpec(
        min_replicas=1,
        max_replicas=1,
        timeout=600,
        containers=[container],
        service_account_name=cfg.serving.service_account or None,
        node_selector=dict(g.node_selector) if gpu and g.node_selector else None,
        tolerations=tolerations if gpu and tolerations else None,
        volumes=volumes or None,
    )
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
    if warning:
        annotations[f"{ANNOTATION_PREFIX}/warning"] = warning
    metadata = client.V1ObjectMeta(
        name=cfg.serving.name,
        namespace=cfg.serving.namespace,
        labels={
            "app.kubernetes.io/name": "sifthinker",
            "app.kubernetes.io/component": "predictor",
            "app.kubernetes.io/part-of": "sifthinker",
            f"{ANNOTATION_PREFIX}/model-version": version,
        },
        annotations=annotations,
    )
    spec = kserve.V1beta1InferenceServiceSpec(predictor=predictor)
    return kserve.V1beta1InferenceService(api_version=API_VERSION, kind=KIND, metadata=metadata, spec=spec)


def to_manifest(isvc: Any) -> dict:
    """A typed object as the plain dict ``kubectl`` reads (camelCase keys, unset fields left out)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


def render_inference_service(
    cfg: RunConfig, storage_uri: str | None, model_version: Any, source: str | None = None,
    warning: str | None = None,
) -> dict:
    """The InferenceService for one model version, as a plain dict.

    ``model_version`` is a registry version (``RegisteredVersion`` / MLflow ``ModelVersion``, anything with
    ``name`` and ``version``) or a version string of ``cfg.registry.model_name``. ``storage_uri`` None makes
    the container pull ``models:/NAME/V`` from ``cfg.tracking_uri`` itself. ``warning`` is recorded as the
    ``sifthinker.io/warning`` annotation.
    """
    try:
        isvc = build_inference_service(cfg, storage_uri, model_version, source=source, warning=warning)
    except ValueError as e:  # a required field the recipe left empty
        raise k8s.ValidationError(f"{KIND}/{cfg.serving.name}", [str(e)], "KServe's typed models") from e
    return to_manifest(isvc)


# ---- validation ------------------------------------------------------------------------------------
TYPED_VALIDATION = "validated by KServe's typed models"
CRD_HINT = f"(set {Env.CRD_DIR} to also check the CRD schema)"
CLUSTER_VALIDATION = "and by the cluster (server-side dry run)"


def validate_manifest(manifest: dict) -> str:
    """Validate a rendered InferenceService; returns the line saying how. Raises ``k8s.ValidationError``.

    With ``CRD_DIR`` set: the CRD schema. Without: the typed models built it (required fields), plus the
    checks they do not make (metadata names, resource quantities), so nothing beside the repo is needed.
    """
    folder = k8s.crd_dir()
    if folder is not None:
        k8s.validate(manifest, folder)
        return f"validated against the CRD schema in {folder}"
    probs = k8s.metadata_violations(manifest) + k8s.quantity_violations(manifest)
    if probs:
        raise k8s.ValidationError(f"{KIND}/{manifest['metadata'].get('name', '?')}", probs, "KServe's typed models")
    return f"{TYPED_VALIDATION} {CRD_HINT}"


# ---- deploy ------------------------------------------------------------------------------------------
def _cluster_reachable(uri: str) -> bool:
    host = urlparse(uri).hostname or ""
    return uri.startswith(("http://", "https://", "databricks")) and host not in ("localhost", "127.0.0.1", "::1")


def deploy(
    cfg: RunConfig, model_uri: str, apply: bool = False, out_dir: str | Path | None = None, dry_run: bool = False
) -> DeployResult:
    """Render, validate and write the InferenceService for ``model_uri``; returns a :class:`DeployResult`.

    ``model_uri`` is ``models:/NAME@alias`` or ``models:/NAME/V`` (pinned to the version it resolves to
    now) or a storage URI KServe can fetch directly (``s3://...``; the version is then ``unversioned``).
    The manifest goes to ``<out_dir>/<serving.name>-inferenceservice.yaml`` (default ``<work>/deploy``).
    ``dry_run`` renders and validates only: no file, nothing applied. ``apply=True`` runs
    ``kubectl apply --dry-run=server`` (the cluster validates) and then ``kubectl apply`` (``$KUBECTL``
    overrides the binary); a manifest a cluster could not serve from is written but never applied.
    """
    if dry_run and apply:
        raise DeployError("a dry run applies nothing: drop dry_run or apply")
    kubectl = find_kubectl() if apply else None  # before any work: --apply without kubectl cannot succeed
    problem = None
    if model_uri.startswith("models:/"):
        from sifthinker import registry

        mv = registry.get_version(cfg, model_uri)  # RegistryError: one line naming the store
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

    manifest = render_inference_service(cfg, storage_uri, version, source=source, warning=problem)
    validation = validate_manifest(manifest)
    if problem:
        log.warning(problem)
    if dry_run:
        log.info("dry run: nothing written; %s", validation)
        return DeployResult(manifest, None, validation, applied=False, warning=problem)

    out = Path(out_dir) if out_dir else cfg.path("deploy")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cfg.serving.name}-inferenceservice.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    log.info("wrote %s (%s)", path, manifest["metadata"]["annotations"][f"{ANNOTATION_PREFIX}/model-uri"])
    if apply:
        if problem:
            raise DeployError(problem)
        kubectl_apply(path, kubectl)
        # the server-side dry run checked the live CRD schema, so the CRD_DIR hint no longer applies
        validation = f"{validation.removesuffix(f' {CRD_HINT}')} {CLUSTER_VALIDATION}"
    log.info("%s", validation)
    return DeployResult(manifest, path, validation, applied=apply, warning=problem)


def find_kubectl() -> str:
    """``$KUBECTL``, else ``kubectl`` on PATH; a DeployError saying what to do when there is none."""
    if env := os.environ.get(Env.KUBECTL):
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise DeployError(f"{Env.KUBECTL}={env} is not an executable file")
        return env
    if found := shutil.which("kubectl"):
        return found
    raise DeployError(f"kubectl not found: --apply needs it (install it or set {Env.KUBECTL} to its path)")


def _kubectl(kubectl: str, args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([kubectl, *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DeployError(f"{kubectl} {' '.join(args)} could not run: {e}") from e


def kubectl_apply(path: str | Path, kubectl: str | None = None) -> str:
    """``kubectl apply --dry-run=server -f PATH``, then ``kubectl apply -f PATH``; returns the apply output.

    The server-side dry run lets the cluster (its CRDs, admission webhooks) reject the manifest before
    anything changes; when it fails nothing is applied and kubectl's message is in the DeployError.
    """
    kubectl = kubectl or find_kubectl()
    proc = _kubectl(kubectl, ["apply", "--dry-run=server", "-f", str(path)])
    if proc.returncode != 0:
        msg = proc.stderr.strip() or proc.stdout.strip()
        raise DeployError(f"the cluster rejected {path} in a server-side dry run (kubectl exit {proc.returncode}), "
                          f"nothing applied: {msg}")
    proc = _kubectl(kubectl, ["apply", "-f", str(path)])
    if proc.returncode != 0:
        msg = proc.stderr.strip() or proc.stdout.strip()
        raise DeployError(f"kubectl apply -f {path} failed (exit {proc.returncode}): {msg}")
    log.info("%s", proc.stdout.strip())
    return proc.stdout
