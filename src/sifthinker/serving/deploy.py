"""Deploy stage: render a KServe ``InferenceService`` for a registered model version, validate it, apply it.

The manifest (:mod:`sifthinker.serving.manifest`) is built with KServe's typed Python models for the
``native`` runtime (the sifthinker predictor) or the ``vllm`` one (KServe's Hugging Face runtime with
the vLLM backend behind the SIF transformer). The version is always pinned (``models:/NAME@champion`` is
resolved when deploying), so a later promotion does not silently change a running service; redeploy to
roll forward, or ``--canary PERCENT`` to send part of the traffic to the new version first.

Validation needs nothing beside the repository: the typed models always check it; with ``CRD_DIR`` set
it is also checked against the CRD schema (:mod:`sifthinker.cluster.crds`), and with ``apply=True`` by the cluster
(a server-side dry run) before the real create or patch, done with the Kubernetes client
(:mod:`sifthinker.serving.kube`), which then waits for the service to be Ready and reports its URL.
:class:`DeployResult` says what ran, in one line.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from sifthinker.cluster import crds
from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env
from sifthinker.serving.manifest import (  # noqa: F401  (re-exported: the stage's public names)
    ANNOTATION_PREFIX,
    API_VERSION,
    KIND,
    KSERVE_STORAGE_SCHEMES,
    MODEL_CACHE,
    MODEL_MOUNT,
    DeployError,
    build_inference_service,
    render_inference_service,
    storage_uri_for,
    to_manifest,
)

log = logging.getLogger(__name__)


def model_uri_for(model: str, alias: str | None = None) -> str:
    """What ``deploy --model X [--alias A]`` names: a bare registered name means ``models:/X@A`` (A defaults
    to champion); a URI is taken as it is, and then takes no alias."""
    if model.startswith("models:/") or "://" in model:
        if alias:
            raise DeployError(f"--alias goes with a registered model name, not with the URI {model!r}")
        return model
    if "/" in model or "@" in model:
        raise DeployError(f"--model {model!r}: give a registered model NAME, models:/NAME@alias, models:/NAME/V "
                          "or a storage URI")
    return f"models:/{model}@{alias or 'champion'}"


@dataclasses.dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` did: the manifest, where it was written (None in a dry run), the one line saying
    which validation ran, and whether it was applied to the cluster."""

    manifest: dict
    path: Path | None
    validation: str
    applied: bool
    warning: str | None = None  # why this manifest cannot serve from a cluster (it is then never applied)
    url: str | None = None  # the Ready InferenceService's URL (applied only)
    action: str | None = None  # "created" | "patched" (applied only)

    def headline(self) -> str:
        """One line for the stage's events, e.g. ``applied models:/m/3 as default/sifthinker; validated ...``."""
        md = self.manifest["metadata"]
        uri = md["annotations"][f"{ANNOTATION_PREFIX}/model-uri"]
        did = "applied" if self.applied else "rendered (dry run)" if self.path is None else "wrote"
        at = f" (ready at {self.url})" if self.applied and self.url else ""
        return f"{did} {uri} as {md.get('namespace')}/{md['name']}{at}; {self.validation}"

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
            "url": self.url,
            "action": self.action,
            "manifest": self.manifest,
        }


# ---- validation ------------------------------------------------------------------------------------
TYPED_VALIDATION = "validated by KServe's typed models"
CRD_HINT = f"(set {Env.CRD_DIR} to also check the CRD schema)"
CLUSTER_VALIDATION = "and by the cluster (server-side dry run)"


def validate_manifest(manifest: dict) -> str:
    """Validate a rendered InferenceService; returns the line saying how. Raises ``crds.ValidationError``.

    With ``CRD_DIR`` set: the CRD schema. Without: the typed models built it (required fields), plus the
    checks they do not make (metadata names, resource quantities), so nothing beside the repo is needed.
    """
    folder = crds.crd_dir()
    if folder is not None:
        crds.validate(manifest, folder)
        return f"validated against the CRD schema in {folder}"
    probs = crds.metadata_violations(manifest) + crds.quantity_violations(manifest)
    if probs:
        raise crds.ValidationError(f"{KIND}/{manifest['metadata'].get('name', '?')}", probs, "KServe's typed models")
    return f"{TYPED_VALIDATION} {CRD_HINT}"


# ---- deploy ------------------------------------------------------------------------------------------
def _cluster_reachable(uri: str) -> bool:
    host = urlparse(uri).hostname or ""
    return uri.startswith(("http://", "https://", "databricks")) and host not in ("localhost", "127.0.0.1", "::1")


def deploy(
    cfg: RunConfig, model_uri: str, apply: bool = False, out_dir: str | Path | None = None, dry_run: bool = False,
    canary: int | None = None, runtime: str | None = None, api: Any = None, poll_s: float = 2.0,
) -> DeployResult:
    """Render, validate and write the InferenceService for ``model_uri``; returns a :class:`DeployResult`.

    ``model_uri`` is ``models:/NAME@alias`` or ``models:/NAME/V`` (pinned to the version it resolves to
    now) or a storage URI KServe can fetch directly (``s3://...``; the version is then ``unversioned``).
    ``runtime`` (default ``serving.runtime``): ``native`` or ``vllm``; ``canary``: the percentage of traffic
    the new version gets. The manifest goes to ``<out_dir>/<serving.name>-inferenceservice.yaml`` (default
    ``<work>/deploy``). ``dry_run`` renders and validates only: no file, nothing applied. ``apply=True``
    creates or patches it with the Kubernetes client (``api``: an ``ApiClient``, default from the
    kubeconfig), a server-side dry run first, then waits up to ``serving.ready_timeout_s`` for Ready; a
    manifest a cluster could not serve from is written but never applied.
    """
    if dry_run and apply:
        raise DeployError("a dry run applies nothing: drop dry_run or apply")
    runtime = runtime or cfg.serving.runtime
    if apply and api is None:
        from sifthinker.serving.kube import api_client

        api = api_client()  # before any work: --apply without a cluster configuration cannot succeed
    problem = None
    if model_uri.startswith("models:/"):
        from sifthinker.registry import model_versions

        mv = model_versions.get_version(cfg, model_uri)  # RegistryError: one line naming the store
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

    manifest = render_inference_service(cfg, storage_uri, version, source=source, warning=problem,
                                        runtime=runtime, canary=canary)
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
    if not apply:
        log.info("%s", validation)
        return DeployResult(manifest, path, validation, applied=False, warning=problem)
    if problem:
        raise DeployError(problem)
    from sifthinker.serving.kube import apply as kube_apply

    done = kube_apply(manifest, api, canary=canary, timeout_s=cfg.serving.ready_timeout_s, poll_s=poll_s)
    # the server-side dry run checked the live CRD schema, so the CRD_DIR hint no longer applies
    validation = f"{validation.removesuffix(f' {CRD_HINT}')} {CLUSTER_VALIDATION}"
    log.info("%s %s/%s, ready at %s; %s", done.action, cfg.serving.namespace, cfg.serving.name, done.url, validation)
    return DeployResult(manifest, path, validation, applied=True, warning=problem, url=done.url, action=done.action)
