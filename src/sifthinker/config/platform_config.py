"""The recipe's ``platform`` section (``PlatformConfig`` and its parts: GPUs, requests, secrets, the TrainJob),
used by :mod:`sifthinker.config.run_config`; kept apart only so that each module stays small. Same conventions:
every field carries ``help`` and its constraints, checked by :mod:`sifthinker.config.schema` when a recipe loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sifthinker.config.schema import doc_field as _f

# Kubernetes syntax, checked here so that a typo fails at load time, not at submission.
_DNS1035 = (r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", "a DNS-1035 label (lower-case letters, digits, '-'; a letter first)")
_DNS1123 = (r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", "a DNS-1123 label (lower-case letters, digits, '-')")
_SUBDOMAIN = (r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", "a DNS-1123 subdomain (lower-case letters, digits, '-', '.')")
_QUANTITY = (r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", "a Kubernetes quantity such as 500m, 16Gi")
_ENV_NAME = (r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name")


@dataclass
class Toleration:
    key: str = _f(help="Taint key tolerated.")
    operator: str = _f("Equal", "Equal (key and value match) or Exists (any value).", choices=("Equal", "Exists"))
    value: str | None = _f(None, "Taint value (with operator Equal).")
    effect: str = _f("NoSchedule", "Taint effect tolerated.", choices=("NoSchedule", "PreferNoSchedule",
                                                                       "NoExecute"))


@dataclass
class GPUConfig:
    count: int = _f(0, "Accelerators per GPU step; 0: GPU steps run like CPU steps.", ge=0)
    resource: str = _f("nvidia.com/gpu", "Extended resource name of the accelerator.", nonempty=True)
    node_selector: dict[str, str] = _f(help="Node labels a GPU step must run on.", factory=dict)
    tolerations: list[Toleration] = _f(help="Taints GPU steps tolerate.", factory=list)
    shm_size: str | None = _f(None, "Memory-backed /dev/shm size, e.g. 16Gi (NCCL and dataloaders need it).",
                              pattern=_QUANTITY)
    cpu: str | None = _f(None, "CPU request and limit of a GPU step.", pattern=_QUANTITY)
    memory: str | None = _f(None, "Memory request and limit of a GPU step.", pattern=_QUANTITY)


@dataclass
class StepResources:
    cpu: str | None = _f(None, "CPU request and limit; null: the step's default (sifthinker.cluster.step_access).",
                         pattern=_QUANTITY)
    memory: str | None = _f(None, "Memory request and limit; null: the step's default.", pattern=_QUANTITY)


@dataclass
class SecretEnv:
    secret: str = _f(help="Kubernetes secret name.", pattern=_SUBDOMAIN)
    env: dict[str, str] = _f(help="Secret key -> environment variable it is exposed as.", factory=dict,
                             pattern=_ENV_NAME)


@dataclass
class TrainJobConfig:
    """sft and grpo-sif as a Kubeflow Trainer TrainJob (sifthinker.training.trainjob) instead of in the step's pod."""

    enabled: bool = _f(False, "Run sft and grpo-sif as a TrainJob even on one node; platform.nodes > 1 always "
                              "does.")
    runtime: str = _f("sifthinker-torch", "ClusterTrainingRuntime the TrainJob uses (manifests/base/trainer).",
                      pattern=_SUBDOMAIN)
    namespace: str | None = _f(None, "Namespace of the TrainJob; null: the step's own namespace (in a pod), else "
                                     "the kube context's.", pattern=_DNS1123)
    service_account: str | None = _f("sifthinker-train", "Service account of the training pods.",
                                     pattern=_SUBDOMAIN)
    checkpoint_pvc: str | None = _f(None, "PVC mounted at <work_dir>/checkpoints in the training pods (checkpoints "
                                          "on their own volume); null: they stay on the workspace PVC.",
                                    pattern=_SUBDOMAIN)
    poll_seconds: float = _f(10.0, "Seconds between status polls while the step waits for the TrainJob.", gt=0)
    active_deadline_seconds: int | None = _f(None, "Trainer fails the job after this many seconds "
                                                   "(DeadlineExceeded); null: no limit.", ge=1)


@dataclass
class RetryConfig:
    steps: dict[str, int] = _f(help="Times KFP retries a failed step, by step name (build-data, sft, ...); a step "
                                    "not named keeps its default (pipelines/platform.py STEP_POLICY: 1 for "
                                    "build-data, sft and grpo-sif, 2 for evaluate, gate, register and deploy, 0 "
                                    "for validate-data). Each preemption of a training step uses one retry.",
                               factory=dict)
    backoff_seconds: int = _f(60, "Wait before a step's first retry.", ge=1)
    backoff_factor: float = _f(2.0, "Each further retry of a step waits this many times longer.", ge=1)
    max_backoff_seconds: int = _f(3600, "Longest wait before a retry.", ge=1)


@dataclass
class PlatformConfig:
    image: str = _f("ghcr.io/sifthinker/sifthinker:0.1.0", "Container image of CPU steps.", nonempty=True)
    gpu_image: str = _f("ghcr.io/sifthinker/sifthinker-train:0.1.0", "Container image of GPU steps.",
                        nonempty=True)
    vllm_env: str = _f("/opt/venv-vllm", "The GPU image's vLLM environment (images/Dockerfile.train): grpo-sif runs "
                       "its Python when grpo.use_vllm, since vLLM 0.31 caps transformers below what SFT needs; "
                       "empty: no separate environment.")
    gpu: GPUConfig = _f(help="Accelerators, scheduling and resources of GPU steps.", factory=GPUConfig)
    gpu_steps: list[str] = _f(help="Pipeline steps that run on GPU nodes (names from sifthinker.names.STAGES).",
                              factory=lambda: ["sft", "grpo-sif"])
    secrets: list[SecretEnv] = _f(help="Secrets exposed as environment variables; each step gets only the keys of "
                                       "the services it uses (sifthinker.cluster.step_access), endpoint, session and "
                                       "login keys as optional.", factory=list)
    requests: dict[str, StepResources] = _f(help="CPU/memory of the steps that run without GPUs, by step name "
                                                 "(build-data, validate-data, gate, ...); a step not named gets "
                                                 "its default (docs/cluster.md, \"Sizing\").", factory=dict)
    workspace_pvc: str | None = _f(None, "PVC mounted at /workspace for models and data on a cluster.",
                                   pattern=_SUBDOMAIN)
    env: dict[str, str] = _f(help="Extra environment variables of every step.", factory=dict)
    nodes: int = _f(1, "Nodes sft and grpo-sif train on, gpu.count GPUs each; > 1 runs them as a Kubeflow "
                       "TrainJob (platform.train_job).", ge=1)
    train_job: TrainJobConfig = _f(help="Training as a Kubeflow Trainer TrainJob.", factory=TrainJobConfig)
    termination_grace_seconds: int = _f(600, "Seconds a training pod gets between SIGTERM (drain, spot reclaim) and "
                                             "SIGKILL: enough to finish a step and write a checkpoint (7B full "
                                             "model + optimizer: minutes). Set on the TrainJob's pods and as "
                                             "torchrun's --shutdown_timeout (docs/reliability.md).", ge=1)
    retry: RetryConfig = _f(help="KFP retries of the pipeline's steps, with exponential backoff (compiled into "
                                 "each task's retryPolicy; local runs are not retried).", factory=RetryConfig)
    service_account: str | None = _f(None, "Service account the pipeline's pods run as (set on the KFP run); "
                                           "null: the KFP default.", pattern=_SUBDOMAIN)

    @property
    def uses_train_job(self) -> bool:
        """Whether sft and grpo-sif submit a TrainJob rather than train in the step's own pod."""
        return self.nodes > 1 or self.train_job.enabled
