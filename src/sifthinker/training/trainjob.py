"""A training stage as a Kubeflow Trainer ``TrainJob``: multi-node SFT and GRPO-SIF on a cluster.

When ``platform.nodes > 1`` (or ``platform.train_job.enabled``), the pipeline's sft / grpo-sif step does
not train in its own pod: :func:`run_as_trainjob` (called by ``sifthinker.training.runner.run_stage``)
stages the inputs on the shared workspace volume, creates a ``TrainJob`` that uses the
``ClusterTrainingRuntime`` of ``manifests/base/trainer/`` (torch distributed; DeepSpeed from the recipe),
waits for it while streaming its status and the nodes' logs (:mod:`sifthinker.training.trainjob_client`), and
hands the trained model back as the step's output. A failed job fails the step with the job's reason.

Data moves through the workspace PVC, which the step and every training node mount at
:data:`WORKSPACE_MOUNT`: ``<work>/trainjobs/<job>/`` holds the recipe, the inputs (unless they already
live on the volume), the output model and rank 0's ``result.json``. Each node runs
``python -m torch.distributed.run -m sifthinker.training.worker STAGE ...``; torchrun takes the node
count, rank and master address from the ``PET_*`` variables that Trainer's torch plugin sets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sifthinker.cluster.step_access import python_env, secret_bindings
from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.names import TRAINING_STAGES, WORKSPACE_MOUNT, Env
from sifthinker.training.common import TrainResult
from sifthinker.training.preemption import torchrun_shutdown_env
from sifthinker.training.trainjob_client import GROUP, NODE, VERSION, TrainJobClient, phase

KIND, API_VERSION = "TrainJob", f"{GROUP}/{VERSION}"
CHECKPOINT_DIR = "checkpoints"  # under the work dir; platform.train_job.checkpoint_pvc is mounted there
PATCH_MANAGER = "sifthinker.io/pipeline"  # our key in spec.runtimePatches (a list map keyed by manager)
WORKER_MODULE = "sifthinker.training.worker"
# KFP v2 tells every step its own pod: the TrainJob is owned by it, so cancelling the run stops training.
POD_NAME_ENV, POD_UID_ENV = "KFP_POD_NAME", "KFP_POD_UID"


@dataclass(frozen=True)
class JobFiles:
    """A job's handoff folder on the workspace volume, as this pod (``local``) and the nodes (``remote``) see it."""

    local: Path
    remote: PurePosixPath

    @property
    def recipe(self) -> str:
        return str(self.remote / "recipe.yaml")

    @property
    def out(self) -> str:
        return str(self.remote / "out")

    @property
    def result(self) -> str:
        return str(self.remote / "result.json")


def job_name(stage: str, pipeline_run: str) -> str:
    """A DNS-1035 name, stable for one (pipeline run, stage): a retried step finds its job again."""
    digest = hashlib.sha256(f"{pipeline_run}/{stage}".encode()).hexdigest()[:10]
    return f"sifthinker-{stage}-{digest}"


def remote_path(cfg: RunConfig, local: Path) -> str:
    """Where a file under the work dir appears on the training nodes (the volume is mounted at WORKSPACE_MOUNT)."""
    rel = Path(local).resolve().relative_to(cfg.work_path)
    return str(PurePosixPath(WORKSPACE_MOUNT, *rel.parts))


def _on_volume(cfg: RunConfig, p: Path) -> bool:
    return Path(p).resolve().is_relative_to(cfg.work_path)


def worker_command(stage: str, files: JobFiles, train_dir: str, model: str, max_steps: int | None) -> list[str]:
    """What every node runs: torchrun reads PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_*."""
    cmd = ["python", "-m", "torch.distributed.run", "-m", WORKER_MODULE, stage, "--recipe", files.recipe,
           "--train-dir", train_dir, "--model", model, "--out", files.out, "--result", files.result]
    return cmd + (["--max-steps", str(max_steps)] if max_steps else [])


def _env(cfg: RunConfig, stage: str) -> list[dict[str, Any]]:

    env: list[dict[str, Any]] = [{"name": Env.WORK_DIR.value, "value": WORKSPACE_MOUNT}]
    # torchrun forwards SIGTERM to the ranks and waits this long for their preemption checkpoint
    env += [{"name": k, "value": v} for k, v in torchrun_shutdown_env(cfg.platform.termination_grace_seconds).items()]
    env += [{"name": k, "value": str(v)} for k, v in (cfg.platform.env | python_env(cfg, stage)).items()
            if k != Env.WORK_DIR.value]
    # the keys the stage's KFP step would get, optional ones optional: a secret without them still starts
    for b in secret_bindings(cfg, stage):
        ref: dict[str, Any] = {"name": b.secret, "key": b.key}
        if b.optional:
            ref["optional"] = True
        env.append({"name": b.env, "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(cfg: RunConfig) -> dict[str, Any] | None:
    gpu = cfg.platform.gpu
    amounts = {k: v for k, v in (("cpu", gpu.cpu), ("memory", gpu.memory)) if v}
    if gpu.count:
        amounts[gpu.resource] = str(gpu.count)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else None


def _pod_patch(cfg: RunConfig) -> dict[str, Any]:
    """Per-job settings the runtime cannot know: the recipe's volumes, scheduling and service account."""
    p, tj = cfg.platform, cfg.platform.train_job
    volumes: list[dict[str, Any]] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": p.workspace_pvc}}]
    mounts: list[dict[str, Any]] = []
    if p.gpu.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": p.gpu.shm_size}})
    if tj.checkpoint_pvc:
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": tj.checkpoint_pvc}})
        mounts.append({"name": "checkpoints", "mountPath": f"{WORKSPACE_MOUNT}/{CHECKPOINT_DIR}"})
    # SIGTERM -> SIGKILL: the time the ranks have for their preemption checkpoint (training.preemption)
    spec: dict[str, Any] = {"volumes": volumes, "terminationGracePeriodSeconds": p.termination_grace_seconds}
    if mounts:
        spec["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    if tj.service_account:
        spec["serviceAccountName"] = tj.service_account
    if p.gpu.count and p.gpu.node_selector:
        spec["nodeSelector"] = {k: str(v) for k, v in p.gpu.node_selector.items()}
    if p.gpu.count and p.gpu.tolerations:
        spec["tolerations"] = [{k: v for k, v in {"key": t.key, "operator": t.operator, "effect": t.effect,
                                                  "value": None if t.operator == "Exists" else t.value}.items()
                                if v is not None} for t in p.gpu.tolerations]
    return spec


def owner_reference() -> dict[str, Any] | None:
    """The step's own pod as the job's owner (deleting the run's pods deletes the job), when KFP says which."""
    name, uid = os.environ.get(POD_NAME_ENV), os.environ.get(POD_UID_ENV)
    if not name or not uid or name.startswith("{{"):
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


def build_trainjob(cfg: RunConfig, stage: str, name: str, namespace: str, files: JobFiles, train_dir: str,
                   model: str, max_steps: int | None = None, pipeline_run: str = "",
                   owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TrainJob for one training stage (a plain dict, as the API and the CRD schema take it).

    ``owner`` (the step's pod, :func:`owner_reference`) must live in ``namespace``: Kubernetes does not
    resolve owners across namespaces and would garbage-collect the job.
    """
    if stage not in TRAINING_STAGES:
        raise ValueError(f"unknown training stage {stage!r}; expected one of {TRAINING_STAGES}")
    p = cfg.platform
    labels = {"app.kubernetes.io/part-of": "sifthinker", "app.kubernetes.io/component": "training",
              "sifthinker.io/stage": stage}
    if pipeline_run and len(pipeline_run) <= 63 and pipeline_run.replace("-", "").isalnum():
        labels["sifthinker.io/pipeline-run"] = pipeline_run
    trainer: dict[str, Any] = {
        "image": p.gpu_image if p.gpu.count else p.image,
        "command": worker_command(stage, files, train_dir, model, max_steps),
        "env": _env(cfg, stage),
        "numNodes": p.nodes,
        "numProcPerNode": max(p.gpu.count, 1),
    }
    if res := _resources(cfg):
        trainer["resourcesPerNode"] = res
    patch = {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": NODE, "template": {"spec": {"template": {"spec": _pod_patch(cfg)}}}}]}}}}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner:
        metadata["ownerReferences"] = [owner]
    spec: dict[str, Any] = {"runtimeRef": {"name": p.train_job.runtime, "apiGroup": GROUP,
                                           "kind": "ClusterTrainingRuntime"},
                            "trainer": trainer, "runtimePatches": [patch]}
    if p.train_job.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = p.train_job.active_deadline_seconds
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def _stage_in(cfg: RunConfig, src: Path, dest: Path) -> str:
    """``src`` as the nodes see it: in place when it is on the volume already, else copied there."""
    if _on_volume(cfg, src):
        return remote_path(cfg, src)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    return remote_path(cfg, dest)


def job_files(cfg: RunConfig, name: str) -> JobFiles:
    local = cfg.work_path / "trainjobs" / name
    return JobFiles(local=local, remote=PurePosixPath(remote_path(cfg, local)))


def check_config(cfg: RunConfig) -> None:
    if not cfg.platform.workspace_pvc:
        raise ConfigError("a TrainJob (platform.nodes > 1 or platform.train_job.enabled) needs "
                          "platform.workspace_pvc: the step and the training nodes exchange data on it")


def prepare(cfg: RunConfig, name: str, train_dir: Path, model_dir: Path | str) -> tuple[JobFiles, str, str]:
    """Write the job's recipe and stage its inputs on the workspace volume; (files, train dir, model) remote."""
    check_config(cfg)
    files = job_files(cfg, name)
    files.local.mkdir(parents=True, exist_ok=True)
    (files.local / "recipe.yaml").write_text(cfg.to_yaml())
    (files.local / "result.json").unlink(missing_ok=True)  # a stale result must not pass for this job's
    train = _stage_in(cfg, Path(train_dir), files.local / "train")
    model = Path(str(model_dir))
    # A hub id (Qwen/Qwen2.5-VL-7B-Instruct) is passed on: the nodes download it into HF_HOME on the volume.
    model_ref = _stage_in(cfg, model, files.local / "model") if model.is_dir() else str(model_dir)
    return files, train, model_ref


def collect(files: JobFiles, out_dir: Path, stage: str) -> TrainResult:
    """Rank 0's result and model, moved from the volume to the step's output artifact."""
    result = files.local / "result.json"
    if not result.is_file():
        raise RuntimeError(f"the TrainJob finished but wrote no {result} (did rank 0 crash after training?)")
    data = json.loads(result.read_text())
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(files.local / "out", out_dir)
    return TrainResult(output_dir=out_dir, metrics=data["metrics"], history=data["history"],
                       mlflow_run_id=data["mlflow_run_id"], stage=stage)


def run_as_trainjob(stage: str, cfg: RunConfig, train_dir: Path, model_dir: Path | str, out_dir: Path,
                    max_steps: int | None = None, client: TrainJobClient | None = None,
                    echo: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``stage`` as a TrainJob, wait for it (streaming status and logs), return rank 0's result.

    ``client`` defaults to the pod's service account, else the kube context. The job's name is fixed by
    (pipeline run, stage): a retried step attaches to its running or finished job, and replaces a failed
    one. Raises :class:`sifthinker.training.trainjob_client.TrainJobFailed` with the job's reason when it fails.
    """
    check_config(cfg)
    echo = echo or _print
    client = client or TrainJobClient.from_environment()
    run = os.environ.get(Env.PIPELINE_RUN) or f"adhoc-{uuid.uuid4().hex[:8]}"
    name = job_name(stage, run)
    namespace = cfg.platform.train_job.namespace or client.namespace
    existing = client.get(namespace, name)
    if existing is not None and phase(existing) == "Failed":
        echo(f"{stage}: TrainJob {namespace}/{name} failed in an earlier attempt; replacing it")
        client.delete(namespace, name)
        existing = None
    if existing is None:
        files, train, model = prepare(cfg, name, Path(train_dir), model_dir)
        owner = owner_reference() if namespace == client.namespace else None  # same namespace only
        body = build_trainjob(cfg, stage, name, namespace, files, train, model, max_steps, pipeline_run=run,
                              owner=owner)
        echo(f"{stage}: TrainJob {namespace}/{name} on {cfg.platform.nodes} node(s) x "
             f"{body['spec']['trainer']['numProcPerNode']} process(es), runtime {cfg.platform.train_job.runtime}")
        client.create(body)
    else:
        files = job_files(cfg, name)
        echo(f"{stage}: attaching to TrainJob {namespace}/{name} ({phase(existing)}) from an earlier attempt")
    client.wait(namespace, name, poll_seconds=cfg.platform.train_job.poll_seconds, echo=echo)
    result = collect(files, Path(out_dir), stage)
    shutil.rmtree(files.local, ignore_errors=True)  # the model is in the step's output now
    return result


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)  # the step's log, as KFP shows it
