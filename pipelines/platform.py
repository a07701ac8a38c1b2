"""The one place where the run config's ``platform`` section becomes Kubernetes settings of a task.

For every step: the container image (``platform.image``, or ``platform.gpu_image`` on a GPU step), the
plain environment (``platform.env``), the Python environment in the image (grpo-sif with vLLM rollouts:
``sifthinker.cluster.step_access.python_env``) and the workspace PVC (``platform.workspace_pvc``, mounted at
``/workspace`` and made the work directory).

Secrets (``platform.secrets``) as environment variables, least privilege: each step gets only the keys
of the services it uses (``sifthinker.cluster.step_access``: s3:// data, benchmarks or checkpoints, MLflow, the
model hub), required keys in one ``secretAsEnv`` entry and optional ones (the S3 endpoint, a session
token, a login, the hub token) in a second entry marked ``optional`` (kfp-kubernetes 2.17's flag; the KFP
driver sets ``optional`` on each key's ``secretKeyRef``, so a secret without the key still starts the pod).
A step that uses none of a secret's services does not get the secret at all.

Every step asks for CPU and memory: a step without GPUs from ``platform.requests`` over its default
(``sifthinker.cluster.step_access.step_requests``; build-data one CPU per build worker), a training step from
``platform.gpu``, an evaluate step from ``eval.resources`` (one benchmark's generation, not training's
node), with ``eval.parallelism`` benchmarks at once (the ParallelFor's limit, see
``pipelines/sifthinker_pipeline.py``); :func:`check_eval_budget` keeps that within training's GPUs.

For a GPU step (named in ``platform.gpu_steps`` while ``platform.gpu.count > 0``): the accelerator
request (``gpu.resource`` x ``gpu.count``), CPU/memory requests and limits, the node selector, the
tolerations and a memory-backed emptyDir at ``/dev/shm`` of ``gpu.shm_size`` (the container runtime's
64 MiB default breaks NCCL and multi-worker data loading).

With a TrainJob (``platform.nodes > 1`` or ``platform.train_job.enabled``) sft and grpo-sif train in
the TrainJob's pods (sifthinker.training.trainjob): their own steps only submit and wait, so they run on the CPU
image without GPUs, holding no accelerator while they wait.

``STEP_POLICY`` is each step's default retries and caching (:func:`apply_policy`): steps whose failures
are mostly transient (downloads, the MLflow server, the Kubernetes API, a preempted node) are retried with
backoff; validate-data is not (its failure is a verdict on the data). The recipe's ``platform.retry``
overrides the counts per step and sets the backoff (:func:`step_retries`). Steps whose result depends on
more than their inputs (the gate reads the registry's current champion) or that have side effects
(register, deploy) never answer from the cache.

kfp's local runner ignores all of this except the environment; the compiled YAML carries it
(``platforms.kubernetes`` for kfp-kubernetes settings, ``resources`` in the executors for the rest).
"""

from __future__ import annotations

import dataclasses

from kfp import kubernetes
from kfp.dsl import PipelineTask

from sifthinker.cluster.step_access import (
    eval_gpu_budget,
    python_env,
    secret_bindings,
    step_access,
    step_requests,
)
from sifthinker.config.platform_config import GPUConfig
from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.names import STAGES, TRAINING_STAGES, WORKSPACE_MOUNT, Env, Stage

SHM_VOLUME = "dshm"
SHM_MOUNT = "/dev/shm"
# An evaluate step's pod when eval.resources.gpus is set and its other fields are not (EvalResources' help).
EVAL_DEFAULTS = {"cpu": "8", "memory": "64Gi", "shm_size": "16Gi"}
# step -> (default retries, use the cache); see the module docstring. platform.retry.steps overrides retries.
STEP_POLICY: dict[str, tuple[int, bool]] = {
    Stage.BUILD_DATA: (1, True), Stage.VALIDATE_DATA: (0, True), Stage.SFT: (1, True), Stage.GRPO_SIF: (1, True),
    Stage.EVALUATE: (2, True), Stage.GATE: (2, False), Stage.REGISTER: (2, False), Stage.DEPLOY: (2, False),
}
MAX_RETRIES = 20  # more is a typo or a loop that hides a real failure for days (with hour-long backoffs)


def step_name(step: str) -> str:
    """Config spelling to task name: ``grpo_sif`` and ``grpo-sif`` are the same step."""
    return step.strip().lower().replace("_", "-")


def gpu_steps(cfg: RunConfig) -> set[str]:
    """The steps that get GPUs; empty when the profile has none. Unknown names are config errors."""
    names = {step_name(s) for s in cfg.platform.gpu_steps}
    unknown = sorted(names - set(STAGES))
    if unknown:
        raise ConfigError(f"platform.gpu_steps: unknown step(s) {unknown}; steps: {list(STAGES)}")
    if cfg.platform.uses_train_job:  # the TrainJob's nodes get the GPUs; the steps only wait for them
        names -= set(TRAINING_STAGES)
    return names if cfg.platform.gpu.count > 0 else set()


def is_gpu_step(cfg: RunConfig, step: str) -> bool:
    return step_name(step) in gpu_steps(cfg)


def image_for(cfg: RunConfig, step: str) -> str:
    return cfg.platform.gpu_image if is_gpu_step(cfg, step) else cfg.platform.image


def apply_platform(task: PipelineTask, cfg: RunConfig, step: str) -> PipelineTask:
    """Apply the platform settings for ``step`` to ``task`` (see the module docstring)."""
    p = cfg.platform
    task.set_container_image(image_for(cfg, step))
    # the GPU image's vLLM environment for a step that trains in it (a TrainJob's nodes get it from the job)
    own_python = python_env(cfg, step_name(step)) if is_gpu_step(cfg, step) else {}
    for name, value in {**p.env, **own_python}.items():
        task.set_env_variable(name, str(value))
    apply_secrets(task, cfg, step_name(step))
    if p.workspace_pvc:
        kubernetes.mount_pvc(task, pvc_name=p.workspace_pvc, mount_path=WORKSPACE_MOUNT)
        task.set_env_variable(Env.WORK_DIR.value, WORKSPACE_MOUNT)
    if is_gpu_step(cfg, step):
        apply_gpu(task, eval_gpu(cfg) if step_name(step) == Stage.EVALUATE else p.gpu)
    else:
        cpu, memory = step_requests(cfg, step_name(step))
        set_requests(task, cpu, memory)
    return task


def apply_secrets(task: PipelineTask, cfg: RunConfig, step: str) -> PipelineTask:
    """The step's secret keys (``sifthinker.cluster.step_access.secret_bindings``): per secret, the required keys in
    one entry, the optional keys in another marked optional."""
    by_secret: dict[tuple[str, bool], dict[str, str]] = {}
    for b in secret_bindings(cfg, step):
        by_secret.setdefault((b.secret, b.optional), {})[b.key] = b.env
    for (secret, optional), key_to_env in by_secret.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=key_to_env, optional=optional)
    return task


def set_requests(task: PipelineTask, cpu: str | None, memory: str | None) -> PipelineTask:
    """Request and limit alike (the Guaranteed class: a step is never evicted for another's burst)."""
    if cpu:
        task.set_cpu_request(cpu)
        task.set_cpu_limit(cpu)
    if memory:
        task.set_memory_request(memory)
        task.set_memory_limit(memory)
    return task


def eval_gpu(cfg: RunConfig) -> GPUConfig:
    """The GPU settings of one evaluate step: ``eval.resources`` over training's node (``platform.gpu``)."""
    r, g = cfg.eval.resources, cfg.platform.gpu
    if r.gpus is None:  # sized like training, unless a field says otherwise
        return dataclasses.replace(g, cpu=r.cpu or g.cpu, memory=r.memory or g.memory,
                                   shm_size=r.shm_size or g.shm_size)
    return dataclasses.replace(g, count=r.gpus, cpu=r.cpu or EVAL_DEFAULTS["cpu"],
                               memory=r.memory or EVAL_DEFAULTS["memory"],
                               shm_size=r.shm_size or EVAL_DEFAULTS["shm_size"])


def check_eval_budget(cfg: RunConfig) -> int:
    """The ParallelFor's parallelism limit (``eval.parallelism``); ConfigError when the benchmarks evaluated
    at once would ask for more GPUs than training does (they would wait for, or starve, a training node)."""
    if is_gpu_step(cfg, Stage.EVALUATE):
        per_step, at_once = eval_gpu_budget(cfg)
        training = cfg.platform.gpu.count * cfg.platform.nodes
        if at_once > training:
            raise ConfigError(f"recipe.eval: {per_step} GPU(s) x parallelism {cfg.eval.parallelism} = {at_once} "
                              f"GPUs at once, more than training's {training}; lower eval.parallelism or "
                              f"eval.resources.gpus")
    return cfg.eval.parallelism


def step_retries(cfg: RunConfig) -> dict[str, int]:
    """Each step's retry count: STEP_POLICY's, overridden by ``platform.retry.steps``; a ConfigError names
    an unknown step or a count outside 0..MAX_RETRIES."""
    given = {step_name(k): v for k, v in cfg.platform.retry.steps.items()}
    problems = [f"unknown step {k!r} (steps: {', '.join(STAGES)})" for k in given if k not in STAGES]
    problems += [f"{k}: {v!r} is not a count from 0 to {MAX_RETRIES}" for k, v in given.items()
                 if k in STAGES and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_RETRIES)]
    if problems:
        raise ConfigError(f"platform.retry.steps: {'; '.join(problems)}")
    return {step: given.get(step, STEP_POLICY[step][0]) for step in STAGES}


def apply_policy(task: PipelineTask, cfg: RunConfig, step: str, retries: bool = True) -> PipelineTask:
    """Retries (with ``platform.retry``'s backoff; none when ``retries`` is False, as in local runs) and
    caching for ``step``."""
    r = cfg.platform.retry
    n = step_retries(cfg)[step_name(step)]
    if retries and n:
        task.set_retry(n, backoff_duration=f"{r.backoff_seconds}s", backoff_factor=float(r.backoff_factor),
                       backoff_max_duration=f"{r.max_backoff_seconds}s")
    task.set_caching_options(STEP_POLICY[step_name(step)][1])
    return task


def apply_gpu(task: PipelineTask, gpu: GPUConfig) -> PipelineTask:
    """Accelerators, resources, scheduling and /dev/shm for one GPU task."""
    task.set_accelerator_type(gpu.resource)
    task.set_accelerator_limit(gpu.count)
    set_requests(task, gpu.cpu, gpu.memory)
    for key, value in gpu.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=str(value))
    for t in gpu.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator,
                                  value=None if t.operator == "Exists" else t.value, effect=t.effect)
    if gpu.shm_size:
        kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path=SHM_MOUNT, medium="Memory",
                                   size_limit=gpu.shm_size)
    return task


def steps_table(cfg: RunConfig) -> str:
    """A Markdown table of what each step gets on a cluster: the services it touches, its secret keys
    (optional ones marked ``?``) and its requests (docs/cluster.md shows it for the 7B recipe)."""
    rows = ["| step | touches | secret keys (`?`: optional) | GPUs | CPU | memory |", "|---|---|---|---|---|---|"]
    for step in STAGES:
        access = step_access(cfg, step)
        by_secret: dict[str, list[str]] = {}
        for b in secret_bindings(cfg, step):
            by_secret.setdefault(b.secret, []).append(f"{b.key}{'?' if b.optional else ''}")
        keys = "; ".join(f"`{name}`: {', '.join(ks)}" for name, ks in by_secret.items()) or "none"
        touched = ", ".join(sorted(access.services)) or "artifacts only"
        if is_gpu_step(cfg, step):
            g = eval_gpu(cfg) if step == Stage.EVALUATE else cfg.platform.gpu
            gpus, cpu, memory = str(g.count), g.cpu or "-", g.memory or "-"
        else:
            (cpu, memory), gpus = step_requests(cfg, step), "0"
        rows.append(f"| {step} | {touched} | {keys} | {gpus} | {cpu} | {memory} |")
    return "\n".join(rows)
