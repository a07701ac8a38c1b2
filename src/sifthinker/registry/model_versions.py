"""Model registry (stage "register"): MLflow model versions of plain `save_pretrained` folders.

* :func:`register_model` logs the model folder as an MLflow 3 logged model of a "register" stage run (its
  metrics and lineage params where MLflow shows them natively), creates a model version whose source is
  the logged model's artifact folder (``MlflowClient.create_model_version``; the high-level
  ``mlflow.register_model`` only accepts MLflow-flavoured models), and points the alias ``challenger`` at it.
* :func:`promote` moves an alias (``champion`` by default) and records the version it replaced.
* :func:`resolve` turns ``models:/NAME@alias`` / ``models:/NAME/V`` (or a local folder) into a local
  folder, downloading once per (tracking store, name, version) into a cache.
* :func:`describe` lists the versions and aliases of a registered model.

Only :func:`register_model` creates a tracking store; the other functions raise :class:`RegistryError`
(one line naming the store) for a missing sqlite file, an unreachable server or a failing store.

Model version tags, only what MLflow has no field for: ``recipe``, ``data_fingerprint`` (the training data's
hash), ``pipeline_run``, after a promotion ``previous.<alias>`` (the alias's former version, or ``none``).
Older versions carry ``metric.<name>`` tags instead; :func:`version_metrics` reads either. The registered
model gets ``last_promotion.<alias>`` = ``"<old> -> <new>"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env, Stage
from sifthinker.registry.lineage import dir_hash, flatten
from sifthinker.registry.logged_models import link_metrics, model_metrics, version_metrics
from sifthinker.storage import s3_endpoint

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT_PATH = "model"
RECIPE_ARTIFACT = "recipe.yaml"
_TAG_LIMIT = 5000  # MLflow's maximum tag value length
_COMPLETE_MARKER = ".sifthinker-complete"
_MODELS_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_CONNECT_TIMEOUT = 5.0  # seconds to reach an HTTP tracking server before calling it unreachable


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says what and why."""


class NotRegistered(RegistryError):
    """The store is there but holds no such model, version or alias."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    source_uri: str
    run_id: str

    @property
    def uri(self) -> str:
        """The ``models:/NAME/V`` URI of this version."""
        return f"models:/{self.name}/{self.version}"

    def headline(self) -> str:
        return f"{self.name} version {self.version} (alias {CHALLENGER})"


def _client(tracking_uri: str, create: bool = False):
    """An MlflowClient on the store; only ``create=True`` (registering) may bring a new store into being."""
    if not create:
        _check_store(tracking_uri)  # before importing mlflow (seconds): a missing store fails at once
    elif tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    s3_endpoint.export_for_mlflow()  # MLflow's S3 artifact client: the same endpoint as every other reader
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _check_store(uri: str) -> None:
    """RegistryError for a missing store: MLflow would create the sqlite file, or retry a dead server for minutes."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if not Path(path).is_file():
            raise RegistryError(f"no MLflow store at {path}: the file does not exist "
                                "(nothing was registered there yet, or the tracking URI is wrong)")
        return
    u = urlparse(uri)
    proxied = urllib.request.getproxies().get(u.scheme) and not urllib.request.proxy_bypass(u.hostname or "")
    if u.scheme in ("http", "https") and u.hostname and not proxied:  # through a proxy a direct connect says nothing
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            socket.create_connection((u.hostname, port), timeout=_CONNECT_TIMEOUT).close()
        except OSError as e:
            raise RegistryError(f"the MLflow tracking server at {uri} is unreachable ({e.strerror or e})") from e


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """MLflow's failures (a server's 5xx, a broken sqlite file) as one RegistryError line naming the store."""
    try:
        yield
    except Exception as e:
        from mlflow.exceptions import MlflowException  # imported here: mlflow takes seconds to import

        if not isinstance(e, MlflowException | OSError):
            raise
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise RegistryError(f"the MLflow registry at {uri} failed: {first[:300]}") from e


def _version_number(version: str | int) -> str:
    v = str(version).strip()
    if not v.isdigit() or int(v) < 1:
        raise RegistryError(f"a model version is a positive integer, got {version!r}")
    return str(int(v))


def _tracking_uri(cfg_or_uri: RunConfig | str | None) -> str:
    if isinstance(cfg_or_uri, RunConfig):
        return cfg_or_uri.tracking_uri
    if cfg_or_uri:
        return str(cfg_or_uri)
    return RunConfig().tracking_uri


def _tag_value(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)
    return s if len(s) <= _TAG_LIMIT else s[: _TAG_LIMIT - 3] + "..."




def _is_missing(e: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")) or "not found" in str(e).lower()


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if not _is_missing(e):
            raise
        try:
            client.create_registered_model(name, description="SIFThinker spatial-reasoning VLM")
        except MlflowException as e2:  # created concurrently by someone else
            if "RESOURCE_ALREADY_EXISTS" not in str(getattr(e2, "error_code", "")):
                raise


def _wait_ready(client, name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return
        if mv.status == "FAILED_REGISTRATION":
            raise RegistryError(f"model version {name}/{version} failed: {mv.status_message}")
        if time.monotonic() > deadline:
            raise RegistryError(f"model version {name}/{version} still {mv.status} after {timeout}s")
        time.sleep(0.5)


# ---- register --------------------------------------------------------------------------------------
def register_model(
    cfg: RunConfig, model_dir: str | Path, metrics: dict[str, Any], lineage: dict[str, Any]
) -> RegisteredVersion:
    """Log ``model_dir`` as an MLflow logged model in a "register" stage run and register it as a new
    version (alias ``challenger``), the MLflow 3 way (docs/evaluation.md, "The model in MLflow").

    The logged model (name = the registered model's) holds the files, ``metrics`` (each once, see
    :func:`model_metrics`; linked where the evaluate runs logged them) and ``lineage`` as its params
    (e.g. ``data_dir``, ``data_hash``, ``parent_runs.<stage>``: nested dicts flattened with dots). When
    ``lineage`` has a ``data_dir`` that exists and no ``data_hash``, the hash is computed (:func:`dir_hash`).
    The version's source is the logged model's artifact folder; its only tags are ``recipe``,
    ``data_fingerprint`` and ``pipeline_run`` (:data:`sifthinker.registry.logged_models.VERSION_TAGS`).
    The full recipe YAML is the run artifact ``recipe.yaml``.
    """
    import mlflow

    from sifthinker.registry.tracking import pipeline_run_id, stage_run

    model_dir = Path(model_dir)
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise RegistryError(f"model folder {model_dir} does not exist or is empty")
    lineage = dict(lineage)
    if lineage.get("data_dir") and "data_hash" not in lineage and Path(lineage["data_dir"]).is_dir():
        lineage["data_hash"] = dir_hash(lineage["data_dir"])
    params = {k: _tag_value(v)[:500] for k, v in flatten(lineage).items()}
    name = cfg.registry.model_name
    pipeline_run = str(lineage.get("pipeline_run") or pipeline_run_id() or "")

    with stage_run(cfg, Stage.REGISTER, params={"model_name": name, "model_dir": str(model_dir)}) as run:
        run_id = run.info.run_id
        client = mlflow.MlflowClient()
        mlflow.log_text(cfg.to_yaml(), RECIPE_ARTIFACT)
        lm = mlflow.initialize_logged_model(name=name, source_run_id=run_id, params=params,
                                            model_type="sifthinker-vlm", tags={"recipe": cfg.name})
        try:
            client.log_model_artifacts(lm.model_id, str(model_dir))
            link_metrics(client, lm.model_id, run_id, model_metrics(metrics), pipeline_run, cfg)
        except BaseException:
            mlflow.finalize_logged_model(lm.model_id, "FAILED")
            raise
        mlflow.finalize_logged_model(lm.model_id, "READY")
        artifact_uri = run.info.artifact_uri.rstrip("/")
    source = client.get_logged_model(lm.model_id).artifact_location.rstrip("/")

    client = _client(cfg.tracking_uri, create=True)
    _ensure_registered_model(client, name)
    mv = client.create_model_version(
        name=name, source=source, run_id=run_id, model_id=lm.model_id,
        description=f"recipe {cfg.name}, registered by run {run_id}",
        tags={k: _tag_value(v) for k, v in {"recipe": cfg.name, "data_fingerprint": lineage.get("data_hash"),
                                             "pipeline_run": pipeline_run}.items() if v})
    version = str(mv.version)
    _wait_ready(client, name, version)
    # what the tracking server does on a REST registration (links the logged model's page to its
    # versions); an embedded store leaves it to the client
    with contextlib.suppress(NotImplementedError):
        client._tracking_client.store.set_model_versions_tags(name=name, version=version, model_id=lm.model_id)
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s from run %s (logged model %s, alias %s, recipe %s)", name, version,
             run_id, lm.model_id, CHALLENGER, f"{artifact_uri}/{RECIPE_ARTIFACT}")
    return RegisteredVersion(name=name, version=version, source_uri=source, run_id=run_id)


# ---- promote ---------------------------------------------------------------------------------------
def promote(cfg_or_uri: RunConfig | str | None, name: str, version: str | int, alias: str = CHAMPION) -> dict:
    """Point ``alias`` at ``name``/``version``; returns ``{"name", "version", "alias", "previous"}``.

    The version that held the alias before (or ``None``) is recorded on the promoted version as the tag
    ``previous.<alias>`` and on the registered model as ``last_promotion.<alias>``.
    """
    uri = _tracking_uri(cfg_or_uri)
    version = _version_number(version)
    with _store_errors(uri):
        client = _client(uri)
        rm = _registered_model(client, uri, name)
        have = sorted(int(mv.version) for mv in client.search_model_versions(f"name = '{name}'"))
        if int(version) not in have:
            raise RegistryError(f"model {name!r} has no version {version} in {uri} "
                                f"(versions: {', '.join(map(str, have)) or 'none'})")
        held = (rm.aliases or {}).get(alias)
        previous = None if held is None else str(held)
        if previous == version:
            log.info("%s@%s already is version %s", name, alias, version)
            return {"name": name, "version": version, "alias": alias, "previous": previous}
        # the history first, then the one write that moves the alias: a failure in between leaves the alias
        # where it was (sifthinker.registry.rollback reads this history; a promotion ends any rollback)
        client.set_model_version_tag(name, version, f"previous.{alias}", previous or "none")
        client.set_registered_model_tag(name, f"last_promotion.{alias}", f"{previous or 'none'} -> {version}")
        if f"last_rollback.{alias}" in (rm.tags or {}):
            client.delete_registered_model_tag(name, f"last_rollback.{alias}")
        client.set_registered_model_alias(name, alias, version)
    log.info("%s@%s: %s -> %s", name, alias, previous, version)
    return {"name": name, "version": version, "alias": alias, "previous": previous}


def _registered_model(client, uri: str, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if _is_missing(e):
            raise RegistryError(f"no registered model named {name!r} in {uri}") from e
        raise


# ---- resolve ---------------------------------------------------------------------------------------
def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@alias`` -> (NAME, alias, None); ``models:/NAME/V`` -> (NAME, None, V)."""
    m = _MODELS_URI_RE.match(uri)
    if not m:
        raise RegistryError(f"not a registry URI: {uri!r} (expected models:/NAME@alias or models:/NAME/VERSION)")
    return m["name"], m["alias"], m["version"]


def get_version(cfg_or_uri: RunConfig | str | None, model_uri: str):
    """The MLflow ``ModelVersion`` a ``models:/`` URI points at (aliases resolved now)."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_models_uri(model_uri)
    uri = _tracking_uri(cfg_or_uri)
    with _store_errors(uri):
        client = _client(uri)
        try:
            if alias is not None:
                return client.get_model_version_by_alias(name, alias)
            return client.get_model_version(name, version)
        except MlflowException as e:
            if not _is_missing(e):
                raise
            hint = ""
            with contextlib.suppress(MlflowException):  # the aliases there are: a typo is one look away
                held = sorted((client.get_registered_model(name).aliases or {}).items()) if alias else None
                hint = "" if held is None else f" (aliases of {name}: {', '.join(f'{a} -> version {v}' for a, v in held) or 'none'})"
            raise NotRegistered(f"{model_uri} does not exist in {uri}{hint}") from e


def get_metrics(cfg_or_uri: RunConfig | str | None, model_uri: str) -> dict[str, float]:
    """The metrics of the version a ``models:/`` URI points at (:func:`version_metrics`)."""
    uri = _tracking_uri(cfg_or_uri)
    mv = get_version(uri, model_uri)
    with _store_errors(uri):
        return version_metrics(_client(uri), mv)


def default_cache_dir(cfg: RunConfig | None = None) -> Path:
    if env := os.environ.get(Env.MODEL_CACHE):
        return Path(env)
    if cfg is not None:
        return cfg.path(cfg.model.cache_dir) / "registry"
    return Path.home() / ".cache" / "sifthinker" / "registry"


def resolve(
    model_uri: str,
    cfg: RunConfig | None = None,
    tracking_uri: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local folder holding the model ``model_uri`` names.

    ``models:/NAME@alias`` and ``models:/NAME/V`` are downloaded with ``mlflow.artifacts.download_artifacts``
    into ``<cache>/<store-hash>/<NAME>/<V>`` (the alias is resolved first, so a moved alias downloads the
    new version; a version already in the cache is not downloaded again). A local folder (or ``file://``
    URI) is returned as it is.
    """
    import mlflow.artifacts

    if not model_uri.startswith("models:/"):
        p = Path(model_uri.removeprefix("file://"))
        if not p.is_dir():
            raise RegistryError(f"{model_uri!r} is neither a models:/ URI nor an existing folder")
        return p
    uri = tracking_uri or _tracking_uri(cfg)
    mv = get_version(uri, model_uri)
    store = hashlib.sha256(uri.encode()).hexdigest()[:12]
    target = Path(cache_dir or default_cache_dir(cfg)) / store / mv.name / str(mv.version)
    if (target / _COMPLETE_MARKER).is_file():
        log.info("%s -> version %s (cached at %s)", model_uri, mv.version, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{mv.version}-", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp), tracking_uri=uri))
        if not local.is_dir():
            raise RegistryError(f"{model_uri} (source {mv.source}) is not a folder")
        (local / _COMPLETE_MARKER).write_text(f"{mv.name} {mv.version} {mv.source}\n")
        if target.exists():  # an incomplete earlier download
            shutil.rmtree(target)
        try:
            local.rename(target)
        except OSError:
            if not (target / _COMPLETE_MARKER).is_file():  # lost a race to a concurrent download: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s -> version %s downloaded to %s", model_uri, mv.version, target)
    return target


# ---- describe --------------------------------------------------------------------------------------
def describe(name: str, cfg_or_uri: RunConfig | str | None = None) -> dict:
    """``{"name", "aliases": {alias: version}, "versions": [{version, source, run_id, status, created, aliases,
    tags, metrics}]}`` with versions in ascending order (``metrics``: :func:`version_metrics`)."""
    uri = _tracking_uri(cfg_or_uri)
    with _store_errors(uri):
        client = _client(uri)
        rm = _registered_model(client, uri, name)
        found = client.search_model_versions(f"name = '{name}'")
        metrics = {str(mv.version): version_metrics(client, mv) for mv in found}
    aliases = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
    versions = [
        {"version": str(mv.version), "source": mv.source, "run_id": mv.run_id, "status": mv.status,
         "created": mv.creation_timestamp, "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
         "tags": dict(mv.tags or {}), "metrics": metrics[str(mv.version)]}
        for mv in found
    ]
    versions.sort(key=lambda v: int(v["version"]))
    return {"name": name, "aliases": aliases, "tags": dict(rm.tags or {}), "versions": versions}
