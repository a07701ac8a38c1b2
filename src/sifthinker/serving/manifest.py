"""The InferenceService for one model version, built with KServe's typed Python models.

Two runtimes (``serving.runtime``, ``sifthinker deploy --runtime``):

* ``native``: the predictor is a custom container (``serving.runtime_image``) running ``sifthinker serve``
  on port ``serving.port`` (V1/V2 + OpenAI routes, dynamic batching). The model files come from a storage
  URI KServe's storage initializer fetches into ``/mnt/models`` (``STORAGE_URI`` on the container), or
  the server pulls the pinned ``models:/NAME/V`` from the tracking server itself.
* ``vllm``: the predictor is KServe's Hugging Face runtime (``modelFormat: huggingface``) with the vLLM
  backend serving the merged model from the storage URI on ``serving.gpu`` GPUs, and the SIF
  post-processing (parsing, ``sif`` object, drawing, limits) runs in front of it as the KServe
  transformer: ``sifthinker serve --predictor_host <name>-predictor.<namespace>`` in the same image.

Every name a client may use is the rule of the server: ``serving.name``, plus the registered name and the
pinned ``models:/NAME/V`` as aliases. ``canary`` sets ``canaryTrafficPercent`` on the predictor.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODEL_MOUNT = "/mnt/models"
MODEL_CACHE = "/var/cache/sifthinker"  # where the server downloads a models:/ URI when it pulls it itself
CONTAINER_NAME = "kserve-container"  # the name KServe's storage initializer injection looks for
ANNOTATION_PREFIX = "sifthinker.io"
KSERVE_STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "hdfs://", "webhdfs://", "http://", "https://", "oci://", "hf://")
RUNTIMES = ("native", "vllm")


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


def _resources(cfg: RunConfig, client: Any, small: bool = False):
    gpu = 0 if small else cfg.serving.gpu
    g = cfg.platform.gpu
    cpu = (g.cpu if gpu and g.cpu else None) or ("4" if gpu else "1")
    memory = (g.memory if gpu and g.memory else None) or ("32Gi" if gpu else "4Gi")
    amounts = {"cpu": cpu, "memory": memory} | ({g.resource: str(gpu)} if gpu else {})
    return client.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _env(cfg: RunConfig, storage_uri: str | None, client: Any, pulls: bool = True) -> list:
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
    if storage_uri and pulls:
        put("STORAGE_URI", storage_uri)
    elif pulls:
        put(Env.MLFLOW_TRACKING_URI, cfg.tracking_uri)
        put(Env.MODEL_CACHE, MODEL_CACHE)
    for k, v in cfg.platform.env.items():
        put(k, str(v))
    for s in cfg.platform.secrets:
        for key, var in s.env.items():
            put(var, secret=(s.secret, key))
    return list(env.values())


def _aliases(name: str, version: str) -> list[str]:
    return [] if version == "unversioned" else ["--alias", name, "--alias", f"models:/{name}/{version}"]


def _sif_container(cfg: RunConfig, client: Any, args: list[str], env: list, resources: Any, mounts: list | None,
                   ready_path: str):
    port = cfg.serving.port
    return client.V1Container(
        name=CONTAINER_NAME, image=cfg.serving.runtime_image, command=["sifthinker"], args=args, env=env,
        ports=[client.V1ContainerPort(container_port=port, name="http1", protocol="TCP")], resources=resources,
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path=ready_path, port=port),
                                       period_seconds=10, failure_threshold=3),
        volume_mounts=mounts or None,
    )


def build_inference_service(
    cfg: RunConfig, storage_uri: str | None, model_version: Any, source: str | None = None,
    warning: str | None = None, runtime: str = "native", canary: int | None = None,
):
    """The ``kserve.V1beta1InferenceService`` for one model version (arguments as
    :func:`render_inference_service`). The models refuse a missing required field (ValueError)."""
    import kserve  # the platform extra; imported here so the rest of the module works without it
    from kubernetes import client

    if runtime not in RUNTIMES:
        raise DeployError(f"unknown runtime {runtime!r}: {' or '.join(RUNTIMES)}")
    name, version = _version_fields(cfg, model_version)
    s = cfg.serving
    common = ["--name", s.name, "--host", "0.0.0.0", "--port", str(s.port), "--max-new-tokens", str(s.max_new_tokens)]
    volumes, mounts = [], []
    g = cfg.platform.gpu
    if s.gpu and g.shm_size:
        shm = client.V1EmptyDirVolumeSource(medium="Memory", size_limit=g.shm_size)
        volumes.append(client.V1Volume(name="dshm", empty_dir=shm))
        mounts.append(client.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    tolerations = [client.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
                   for t in g.tolerations]
    placement = dict(
        min_replicas=1, max_replicas=1, timeout=600, service_account_name=s.service_account or None,
        node_selector=dict(g.node_selector) if s.gpu and g.node_selector else None,
        tolerations=tolerations if s.gpu and tolerations else None, canary_traffic_percent=canary,
    )
    transformer = None
    if runtime == "native":
        model_arg = MODEL_MOUNT if storage_uri else f"models:/{name}/{version}"
        if not storage_uri:
            volumes.append(client.V1Volume(name="model-cache", empty_dir=client.V1EmptyDirVolumeSource()))
            mounts.append(client.V1VolumeMount(name="model-cache", mount_path=MODEL_CACHE))
        container = _sif_container(cfg, client, ["serve", "--model", model_arg, *common, *_aliases(name, version)],
                                   _env(cfg, storage_uri, client), _resources(cfg, client), mounts,
                                   f"/v2/models/{s.name}/ready")
        predictor = kserve.V1beta1PredictorSpec(containers=[container], volumes=volumes or None, **placement)
    else:
        if not storage_uri:
            raise DeployError("the vllm runtime loads the model from a storage URI KServe can fetch (s3://...): "
                              "set serving.storage_uri_prefix, or deploy an s3:// URI")
        if not s.gpu:
            raise DeployError("the vllm runtime serves on GPUs: set serving.gpu to 1 or more")
        args = [f"--model_name={s.name}", "--backend=vllm", f'--limit-mm-per-prompt={{"image": {s.max_images}}}',
                *s.vllm_args]
        model = kserve.V1beta1ModelSpec(
            model_format=kserve.V1beta1ModelFormat(name="huggingface"), storage_uri=storage_uri, args=args,
            env=[client.V1EnvVar(name="HF_HUB_OFFLINE", value="1")], resources=_resources(cfg, client),
            volume_mounts=mounts or None,
        )
        predictor = kserve.V1beta1PredictorSpec(model=model, volumes=volumes or None, **placement)
        targs = ["serve", "--predictor_host", f"{s.name}-predictor.{s.namespace}", "--predictor-model", s.name,
                 *common, *_aliases(name, version)]
        container = _sif_container(cfg, client, targs, _env(cfg, storage_uri, client, pulls=False),
                                   _resources(cfg, client, small=True), None, "/v2/health/ready")
        transformer = kserve.V1beta1TransformerSpec(min_replicas=1, max_replicas=1, timeout=600,
                                                    containers=[container],
                                                    service_account_name=s.service_account or None)
    annotations = {
        f"{ANNOTATION_PREFIX}/model-name": name,
        f"{ANNOTATION_PREFIX}/model-version": version,
        f"{ANNOTATION_PREFIX}/model-uri": f"models:/{name}/{version}",
        f"{ANNOTATION_PREFIX}/recipe": cfg.name,
        f"{ANNOTATION_PREFIX}/runtime": runtime,
    }
    if source:
        annotations[f"{ANNOTATION_PREFIX}/model-source"] = source
    if storage_uri:
        annotations[f"{ANNOTATION_PREFIX}/storage-uri"] = storage_uri
    if warning:
        annotations[f"{ANNOTATION_PREFIX}/warning"] = warning
    metadata = client.V1ObjectMeta(
        name=s.name, namespace=s.namespace,
        labels={"app.kubernetes.io/name": "sifthinker", "app.kubernetes.io/component": "predictor",
                "app.kubernetes.io/part-of": "sifthinker", f"{ANNOTATION_PREFIX}/model-version": version},
        annotations=annotations,
    )
    spec = kserve.V1beta1InferenceServiceSpec(predictor=predictor, transformer=transformer)
    return kserve.V1beta1InferenceService(api_version=API_VERSION, kind=KIND, metadata=metadata, spec=spec)


def to_manifest(isvc: Any) -> dict:
    """A typed object as the plain dict ``kubectl`` reads (camelCase keys, unset fields left out)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


def render_inference_service(
    cfg: RunConfig, storage_uri: str | None, model_version: Any, source: str | None = None,
    warning: str | None = None, runtime: str = "native", canary: int | None = None,
) -> dict:
    """The InferenceService for one model version, as a plain dict.

    ``model_version`` is a registry version (``RegisteredVersion`` / MLflow ``ModelVersion``, anything with
    ``name`` and ``version``) or a version string of ``cfg.registry.model_name``. ``storage_uri`` None makes
    the native container pull ``models:/NAME/V`` from ``cfg.tracking_uri`` itself. ``warning`` is recorded as
    the ``sifthinker.io/warning`` annotation.
    """
    from sifthinker.cluster import crds

    try:
        isvc = build_inference_service(cfg, storage_uri, model_version, source=source, warning=warning,
                                       runtime=runtime, canary=canary)
    except ValueError as e:  # a required field the recipe left empty
        raise crds.ValidationError(f"{KIND}/{cfg.serving.name}", [str(e)], "KServe's typed models") from e
    return to_manifest(isvc)
