"""What each pipeline step touches and asks for, and the environment a cluster gives it.

One model, read by the KFP platform helper (``pipelines/platform.py``, which compiles it into the
pipeline), by the cluster-reading test (``tests/pipelines/test_cluster_yaml.py``) and by the local container
journey (a container per step, environment from secrets only):

* :func:`step_access`: the URIs a step's own code reads or writes (data, benchmarks, checkpoints; KFP's
  artifacts are the launcher's business) and whether it talks to MLflow, the model hub or the Kubernetes
  API, derived from the recipe.
* :data:`SERVICE_VARS`: for each service, the environment variables it needs and those it may use.
  A secret key is routed by the variable it is exposed as: a step gets a key only when the key's service
  is one it uses (least privilege), as optional when the variable is optional (an endpoint, a login).
* :func:`secret_bindings` / :func:`container_env`: per step, the secret keys it gets, and the
  environment a pod would start with from given secrets (a missing required key fails as the kubelet's
  CreateContainerConfigError does; a missing optional key is left out).
* :func:`step_requests`: CPU and memory of the steps without GPUs, from ``platform.requests`` over
  :data:`DEFAULT_REQUESTS`; build-data asks for one CPU per build worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.names import STAGES, WORKSPACE_MOUNT, Env, Stage
from sifthinker.storage import s3_endpoint
from sifthinker.storage.locations import is_s3

__all__ = ["DEFAULT_REQUESTS", "SERVICE_VARS", "SecretBinding", "SecretMissing", "Service", "StepAccess",
           "check_cluster_sizes", "container_env", "eval_gpu_budget", "secret_bindings", "service_of", "step_access", "step_requests"]


class Service(StrEnum):
    S3 = "s3"  # object storage: data, benchmarks, checkpoints on s3://
    MLFLOW = "mlflow"  # tracking and registry (artifacts go through the server's proxy)
    HUB = "hub"  # Hugging Face model downloads
    KUBE = "kube"  # the Kubernetes API (TrainJobs, InferenceServices): the pod's service account, no secret


# service -> (variables it needs, variables it may use). Public models need no hub token; MLflow without
# authentication needs no login; AWS S3 needs no endpoint.
SERVICE_VARS: dict[Service, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Service.S3: (s3_endpoint.CREDENTIAL_VARS, s3_endpoint.OPTIONAL_VARS),
    Service.MLFLOW: ((Env.MLFLOW_TRACKING_URI.value,),
                     ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")),
    Service.HUB: ((), ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")),
    Service.KUBE: ((), ()),
}

# step -> (cpu, memory) of a step that runs without GPUs. build-data's CPU is its worker count (see
# step_requests); sft and grpo-sif appear here when they only submit a TrainJob and wait.
DEFAULT_REQUESTS: dict[str, tuple[str, str]] = {
    Stage.BUILD_DATA: ("1", "8Gi"),  # plus 2Gi per worker: each holds a shard's images and depth maps
    Stage.VALIDATE_DATA: ("1", "4Gi"),  # Great Expectations over the two splits' records (text)
    Stage.SFT: ("1", "2Gi"), Stage.GRPO_SIF: ("1", "2Gi"),  # as GPU steps: platform.gpu
    Stage.EVALUATE: ("2", "8Gi"),  # as a GPU step: eval.resources
    Stage.GATE: ("1", "2Gi"),  # reads metrics and the champion's from MLflow
    Stage.REGISTER: ("2", "8Gi"),  # uploads the model folder (a 7B LoRA adapter or merged weights) to MLflow
    Stage.DEPLOY: ("1", "2Gi"),  # renders, validates and applies an InferenceService
}
BUILD_MEMORY_PER_WORKER_GI = 2


def _is_hub_id(name: str | None) -> bool:
    """``org/model`` on the hub, not a local folder, an s3:// URI or a built-in name like ``tiny``."""
    if not name or "://" in name or name.startswith(("/", ".", "~")):
        return False
    return len(PurePosixPath(name).parts) == 2


@dataclass(frozen=True)
class StepAccess:
    """What one step's own code touches (see the module docstring)."""

    step: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    mlflow: bool = False
    hub: bool = False
    kube: bool = False

    @property
    def s3_uris(self) -> tuple[str, ...]:
        return tuple(u for u in (*self.reads, *self.writes) if is_s3(u))

    @property
    def services(self) -> frozenset[Service]:
        out = {s for s, used in ((Service.S3, bool(self.s3_uris)), (Service.MLFLOW, self.mlflow),
                                 (Service.HUB, self.hub), (Service.KUBE, self.kube)) if used}
        return frozenset(out)


def _data_inputs(cfg: RunConfig) -> list[str]:
    parts = cfg.data.sources or [cfg.data]
    return [u for p in parts for u in (p.input, p.image_root) if u]


def step_access(cfg: RunConfig, step: str) -> StepAccess:
    """What ``step`` touches for this recipe (``step`` as in :data:`sifthinker.names.STAGES`)."""
    if step not in STAGES:
        raise ConfigError(f"unknown step {step!r}; steps: {list(STAGES)}")
    base_on_hub = _is_hub_id(cfg.model.base)
    train_job = cfg.platform.uses_train_job
    if step == Stage.BUILD_DATA:
        # Depth-Anything-V2 weights come from the hub only when the build estimates depth with them.
        dav2 = cfg.data.depth in ("dav2", "auto") and cfg.depth.provider == "depth-anything-v2"
        return StepAccess(step, reads=tuple(_data_inputs(cfg)), hub=dav2 and _is_hub_id(cfg.depth.model))
    if step == Stage.VALIDATE_DATA:  # the build's artifacts only
        return StepAccess(step)
    if step in (Stage.SFT, Stage.GRPO_SIF):
        ckpt = (cfg.grpo.checkpoint_dir,) if step == Stage.GRPO_SIF and is_s3(cfg.grpo.checkpoint_dir) else ()
        return StepAccess(step, reads=ckpt, writes=ckpt, mlflow=True, hub=base_on_hub, kube=train_job)
    if step == Stage.EVALUATE:  # one component for every benchmark: the union of their data
        data = tuple(b.data for b in cfg.eval.benchmarks if b.data)
        depth_hub = cfg.depth.provider == "depth-anything-v2" and _is_hub_id(cfg.depth.model)
        return StepAccess(step, reads=data, mlflow=True, hub=base_on_hub or depth_hub)
    if step == Stage.GATE:  # the champion's registered metrics
        return StepAccess(step, mlflow=True)
    if step == Stage.REGISTER:  # the model folder goes to MLflow's proxied artifact store
        return StepAccess(step, mlflow=True)
    return StepAccess(step, mlflow=True, kube=True)  # deploy: models:/ -> storage URI, the InferenceService


def service_of(env_var: str) -> Service | None:
    """The service an environment variable belongs to (:data:`SERVICE_VARS`), or None."""
    for service, (required, optional) in SERVICE_VARS.items():
        if env_var in required or env_var in optional:
            return service
    return None


@dataclass(frozen=True)
class SecretBinding:
    """One secret key a step gets, as the environment variable ``env``."""

    secret: str
    key: str
    env: str
    optional: bool


def secret_bindings(cfg: RunConfig, step: str) -> list[SecretBinding]:
    """The keys of ``platform.secrets`` that ``step`` gets (least privilege), in recipe order.

    ConfigError for a variable no service claims (it could not be routed) and, when the recipe has
    secrets, for a service the step uses whose required variable no secret provides (the step would fail
    at its first call). A recipe without secrets (local runs) takes credentials from the process.
    """
    access = step_access(cfg, step)
    out: list[SecretBinding] = []
    for s in cfg.platform.secrets:
        for key, env in s.env.items():
            service = service_of(env)
            if service is None:
                known = sorted(v for req, opt in SERVICE_VARS.values() for v in (*req, *opt))
                raise ConfigError(f"recipe.platform.secrets: {s.secret}/{key} -> {env}: no step is known to use "
                                  f"{env}; variables: {known}")
            if service in access.services:
                out.append(SecretBinding(s.secret, key, env, optional=env not in SERVICE_VARS[service][0]))
    if not cfg.platform.secrets:  # no secrets at all: a local run, credentials from the process's environment
        return out
    given = {b.env for b in out}
    for service in sorted(access.services):
        missing = [v for v in SERVICE_VARS[service][0] if v not in given]
        if missing and not (service == Service.MLFLOW and cfg.registry.tracking_uri):
            why = ", ".join(access.s3_uris) if service == Service.S3 else service.value
            raise ConfigError(f"step {step} uses {why} but recipe.platform.secrets maps no key to {missing}")
    return out


class SecretMissing(RuntimeError):
    """A required secret key that is not there: the pod would not start (CreateContainerConfigError)."""


# The GPU image's PATH (images/Dockerfile.train's /opt/venv first, then the nvidia/cuda base's, which has
# nvcc for DeepSpeed's JIT ops): a PATH set on a container replaces the image's, so it is spelled out here;
# tests/pipelines/test_containers.py checks it against the built image.
GPU_IMAGE_PATH = "/opt/venv/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def python_env(cfg: RunConfig, step: str) -> dict[str, str]:
    """The variables that pick a step's Python environment in its image: grpo-sif with ``grpo.use_vllm`` runs
    in ``platform.vllm_env`` (vLLM's pins; its ``bin`` first on PATH), every other step in the image's
    default. In an image without that folder PATH falls through to the default environment."""
    if step == Stage.GRPO_SIF and cfg.grpo.use_vllm and cfg.platform.vllm_env:
        return {"PATH": f"{cfg.platform.vllm_env.rstrip('/')}/bin:{GPU_IMAGE_PATH}"}
    return {}


def container_env(cfg: RunConfig, step: str, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The environment ``step``'s container starts with on a cluster, given the secrets' contents
    (secret name -> key -> value): ``platform.env``, its Python environment (:func:`python_env`; the
    compiled pipeline sets that on GPU steps only, and in an image without the vLLM folder PATH falls
    through to the default environment, so a CPU step runs the same either way), the workspace variable,
    and the step's secret keys.

    For the local container journey: pass the environment this returns to each container, and nothing
    else from the host, to run it the way a cluster delivers credentials.
    """
    env = {k: str(v) for k, v in cfg.platform.env.items()} | python_env(cfg, step)
    if cfg.platform.workspace_pvc:
        env[Env.WORK_DIR.value] = WORKSPACE_MOUNT
    for b in secret_bindings(cfg, step):
        values = secrets.get(b.secret)
        if values is not None and b.key in values:
            env[b.env] = values[b.key]
        elif not b.optional:
            raise SecretMissing(f"step {step}: secret {b.secret!r} has no key {b.key!r} ({b.env}): "
                                f"CreateContainerConfigError")
    return env


def step_requests(cfg: RunConfig, step: str) -> tuple[str, str]:
    """(cpu, memory) of ``step`` when it runs without GPUs: ``platform.requests[step]`` over the defaults.

    build-data asks for one CPU per build worker (and 2Gi of memory each), so its workers never outnumber
    its cores. ``data.workers: 0`` (one per core: a local run's choice) keeps the default; a cluster
    compile refuses it (:func:`check_cluster_sizes`).
    """
    cpu, memory = DEFAULT_REQUESTS[step]
    if step == Stage.BUILD_DATA and cfg.data.workers:
        cpu = str(cfg.data.workers)
        memory = f"{8 + BUILD_MEMORY_PER_WORKER_GI * cfg.data.workers}Gi"
    own = cfg.platform.requests.get(step)
    if own is not None:
        cpu, memory = own.cpu or cpu, own.memory or memory
    if step == Stage.BUILD_DATA and own is not None and own.cpu and _cpus(own.cpu) < cfg.data.workers:
        raise ConfigError(f"recipe.platform.requests.build-data.cpu: {own.cpu} is fewer than data.workers "
                          f"({cfg.data.workers}); the workers would share cores")
    return cpu, memory


def check_cluster_sizes(cfg: RunConfig) -> None:
    """What a cluster compile needs beyond a local run: a build worker count a pod can ask CPUs for."""
    if cfg.data.workers == 0:
        raise ConfigError("recipe.data.workers: 0 (one per core) would count the node's cores, not the "
                          "build-data step's CPU request; give a number for a cluster")


def _cpus(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def eval_gpu_budget(cfg: RunConfig) -> tuple[int, int]:
    """(GPUs one evaluate step asks for, GPUs at once with ``eval.parallelism``)."""
    gpus = cfg.eval.resources.gpus or cfg.platform.gpu.count
    return gpus, gpus * min(cfg.eval.parallelism, len(cfg.eval.benchmarks))
