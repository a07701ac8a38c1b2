"""Compile the SIFThinker pipeline and run it locally: the KFP layer's entry points.

The pipeline lives in ``pipelines/sifthinker_pipeline.py`` and its steps in ``components/<name>/``; this
module drives them (the CLI's ``pipeline compile``, ``run`` and ``demo`` commands call it; submitting and
uploading to a KFP server is ``pipelines/submit.py``).

``run_local`` runs the same pipeline definition as a cluster run, with kfp's ``SubprocessRunner`` in this
Python environment: every step is a subprocess, artifacts are folders under ``pipeline_root``. Kubernetes
settings (GPUs, node selector, tolerations, /dev/shm, secrets, PVC) have no effect locally; they are
tested on the compiled YAML instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import STAGES, Env
from sifthinker.runtime.stages import json_safe, recipe_parameter

__all__ = ["LocalRunResult", "TaskOutputs", "compile_pipeline", "run_local"]


# -- compile -------------------------------------------------------------------------------
def _pipeline(cfg: RunConfig, retries: bool = True, step_env: Mapping[str, Mapping[str, str]] | None = None):
    from pipelines.sifthinker_pipeline import build_pipeline  # lazy: kfp and the components load on use

    return build_pipeline(cfg, retries=retries, step_env=step_env)


def compile_pipeline(cfg: RunConfig, out_path: str | Path) -> Path:
    """Compile the pipeline for ``cfg`` to a KFP IR YAML; the recipe travels inside as the default of
    the ``recipe`` parameter, the platform settings (images, GPUs, ...) as the task configuration."""
    from kfp import compiler

    from sifthinker.cluster.step_access import check_cluster_sizes

    check_cluster_sizes(cfg)  # a compiled pipeline is for a cluster (a local run builds its own)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=_pipeline(cfg), package_path=str(out))
    return out


# -- local run ----------------------------------------------------------------------------------------
@dataclass
class TaskOutputs:
    """One finished task of a local run: its output parameters and artifacts (uri, local path, metadata)."""

    name: str
    dir: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, artifact: str) -> Path:
        return Path(self.artifacts[artifact]["uri"])


@dataclass
class LocalRunResult:
    pipeline_run_id: str
    pipeline_root: Path
    run_dir: Path
    tasks: dict[str, TaskOutputs]
    gate_passed: bool | None = None
    gate_failures: list[str] = field(default_factory=list)
    registered: dict[str, Any] | None = None  # model_name, version, source_uri, run_id
    deployment: dict[str, Any] | None = None  # deploy()'s result and the manifest folder

    @property
    def ran(self) -> list[str]:
        """Task names that ran, in pipeline order; a stage run once per item reads ``evaluate:<benchmark>``."""
        out = []
        for stage in STAGES:
            out += [t for t in sorted(self.tasks) if t == stage or t.startswith(f"{stage}:")]
        return out + sorted(set(self.tasks) - set(out))

    @property
    def metrics(self) -> dict[str, Any]:
        """The evaluation metrics the gate read (every benchmark's, keyed ``<benchmark>/<metric>``)."""
        from sifthinker.registry.gate import merge_metrics

        if (gate := self.tasks.get("gate")) and gate.parameters.get("metrics"):
            return json.loads(gate.parameters["metrics"])
        return merge_metrics([t.parameters.get("Output") or "{}" for n, t in self.tasks.items()
                              if n.split(":")[0] == "evaluate"])

    def artifact(self, task: str, name: str) -> Path:
        return self.tasks[task].path(name)

    def summary(self) -> str:
        """A few lines: the run, the gate's verdict, what was registered and deployed, where artifacts are."""
        lines = [f"pipeline run {self.pipeline_run_id}: {len(self.tasks)} steps ran, artifacts in {self.run_dir}"]
        skipped = [s for s in STAGES if not any(t.split(":")[0] == s for t in self.tasks)]
        if skipped:
            lines.append(f"  not run: {', '.join(skipped)}")
        if self.gate_passed is not None:
            lines.append("  gate: passed" if self.gate_passed else "  gate: FAILED, nothing registered")
            lines += [f"    - {f}" for f in self.gate_failures]
        if self.registered:
            r = self.registered
            lines.append(f"  registered {r.get('model_name')} version {r.get('version')} ({r.get('source_uri')})")
        if self.deployment and self.deployment.get("manifest_dir"):
            lines.append(f"  InferenceService manifest in {self.deployment['manifest_dir']}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(self)


def _short(v: Any, n: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    s = s.replace("\n", " | ")
    return s if len(s) <= n else s[: n - 3] + "..."


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run"


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_task(task_dir: Path, component: Any | None) -> TaskOutputs:
    """A task's outputs from its folder: executor_output.json plus OutputPath parameter files."""
    from kfp.dsl.types import type_utils

    out_file = task_dir / "executor_output.json"
    executor_output = json.loads(out_file.read_text()) if out_file.is_file() else {}
    params = dict(executor_output.get("parameterValues", {}))
    artifacts: dict[str, dict[str, Any]] = {}
    for name, entry in executor_output.get("artifacts", {}).items():
        arts = entry.get("artifacts") or [{}]
        artifacts[name] = {"uri": arts[0].get("uri", str(task_dir / name)), "metadata": arts[0].get("metadata", {})}
    specs = (component.component_spec.outputs or {}) if component is not None else {}
    for name, spec in specs.items():
        if type_utils.is_parameter_type(spec.type):
            if name not in params and (task_dir / name).is_file():  # OutputPath(...) parameters
                text = (task_dir / name).read_text()
                params[name] = text if "String" in str(spec.type) else json.loads(text or "null")
        elif name not in artifacts and (task_dir / name).exists():
            artifacts[name] = {"uri": str(task_dir / name), "metadata": {}}
    return TaskOutputs(name=task_dir.name, dir=task_dir, parameters=params, artifacts=artifacts)


def _collect(run_id: str, root: Path, run_dir: Path) -> LocalRunResult:
    from components import COMPONENTS

    by_name = {c.name: c for c in COMPONENTS.values()}
    tasks: dict[str, TaskOutputs] = {}
    for d in sorted(run_dir.iterdir()):
        if not d.is_dir():
            continue
        if d.name.startswith("for-loop-"):  # one ParallelFor iteration: its tasks, named by their item
            for t in sorted(x for x in d.iterdir() if x.is_dir()):
                task = _read_task(t, by_name.get(t.name))
                part = next((a["metadata"].get("benchmark") for a in task.artifacts.values()
                             if a["metadata"].get("benchmark")), d.name.rsplit("-", 1)[-1])
                task.name = f"{t.name}:{part}"
                tasks[task.name] = task
        else:
            tasks[d.name] = _read_task(d, by_name.get(d.name))
    result = LocalRunResult(pipeline_run_id=run_id, pipeline_root=root, run_dir=run_dir, tasks=tasks)
    if gate := tasks.get("gate"):
        result.gate_passed = bool(gate.parameters.get("Output"))
        result.gate_failures = [f for f in str(gate.parameters.get("failures") or "").splitlines() if f.strip()]
    if reg := tasks.get("register"):
        result.registered = dict(reg.parameters)
    if dep := tasks.get("deploy"):
        result.deployment = {"result": json.loads(dep.parameters.get("Output") or "{}"),
                             "manifest_dir": dep.artifacts.get("manifest", {}).get("uri")}
    return result


def run_local(cfg: RunConfig, pipeline_root: str | Path | None = None, apply_deployment: bool = False,
              run_id: str | None = None) -> LocalRunResult:
    """Run the whole pipeline on this machine (kfp.local, SubprocessRunner in this environment).

    Every step's MLflow run is tagged with one pipeline id (``run_id``, else ``SIFTHINKER_PIPELINE_RUN``
    from the environment, else a new ``local-<time>-<hex>``: ``result.pipeline_run_id``); the work
    directory is pinned to ``cfg.work_path`` for all steps. A failed gate is a successful run whose
    ``gate_passed`` is False and in which register and deploy did not run; a failing step raises.
    """
    from kfp import local

    import sifthinker

    root = Path(pipeline_root) if pipeline_root else cfg.path("pipeline_runs")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # An id already in the environment (e.g. set by `sifthinker demo`) is kept, so callers can find the runs.
    run_id = run_id or os.environ.get(Env.PIPELINE_RUN) or f"local-{_stamp()}-{uuid.uuid4().hex[:6]}"
    src_root = str(Path(sifthinker.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (src_root, os.environ.get("PYTHONPATH", "")) if p)
    # The workspace PVC is a cluster volume: locally the work directory stays cfg.work_path.
    pipeline = _pipeline(dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, workspace_pvc=None)),
                         retries=False)  # a local failure is reported at once, not retried with backoff
    before = {p.name for p in root.iterdir()}
    env = {Env.PIPELINE_RUN.value: run_id, Env.WORK_DIR.value: str(cfg.work_path), "PYTHONPATH": pythonpath}
    with _environ(**env), warnings.catch_warnings():
        # The steps name container images; the subprocess runner uses this environment instead.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
        pipeline(recipe=recipe_parameter(cfg), apply_deployment=apply_deployment)
    new = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"the local run left no run folder under {root}")
    return _collect(run_id, root, new[-1])


# -- containers ---------------------------------------------------------------------------------------
# The images' user (images/Dockerfile); group 0 as with a cluster's arbitrary uids.
CONTAINER_USER = "1000:0"
# kfp's DockerRunner mounts its workspace_root here (kfp.dsl.constants.WORKSPACE_MOUNT_PATH); the steps'
# shared work directory lives under it, as under the workspace PVC on a cluster.
CONTAINER_WORK_DIR = "/kfp-workspace/work"


class StepFailed(RuntimeError):
    """A step of a container run did not finish, whatever the runner reported."""


# The events file the steps append to (sifthinker.runtime.events), in the workspace: the host reads it for its
# one line per stage (host_events), as it reads a subprocess run's file.
CONTAINER_EVENTS = "/kfp-workspace/events.jsonl"


def host_events(pipeline_root: str | Path) -> Path:
    """Where this machine sees :data:`CONTAINER_EVENTS` of a container run under ``pipeline_root``."""
    return Path(pipeline_root).resolve() / "workspace" / "events.jsonl"


def step_environments(cfg: RunConfig, secrets: Mapping[str, Mapping[str, str]],
                      run_id: str) -> dict[str, dict[str, str]]:
    """Each step's container environment in a container run: exactly what a pod of that step starts with on
    a cluster (``sifthinker.cluster.step_access.container_env``: ``platform.env`` and only the keys of the secrets
    its services need, ``secrets`` being the secrets' contents), plus what the runner itself provides on a
    cluster (the run id, the shared work directory) and the events file. Nothing from this process's
    environment: no ambient AWS or MLflow setting reaches a step."""
    from sifthinker.cluster.step_access import container_env

    own = {Env.PIPELINE_RUN.value: run_id, Env.WORK_DIR.value: CONTAINER_WORK_DIR, Env.EVENTS.value: CONTAINER_EVENTS}
    return {step: {**container_env(cfg, step, secrets), **own} for step in STAGES}


def check_outcomes(run_dir: Path) -> list[str]:
    """The tasks of a finished run whose own executor record (``executor_output.json``, written by the KFP
    executor inside the step as its last act) is there. kfp's DockerRunner reports a container that was
    gone before it read the exit code as a success; a task folder without that record is a step that did
    not finish, and raises StepFailed."""
    done, missing = [], []
    for d in sorted(p for p in run_dir.rglob("*") if p.is_dir() and p.parent != run_dir.parent):
        if d.parent == run_dir or d.parent.name.startswith("for-loop-"):
            if d.name.startswith("for-loop-"):
                continue
            (done if (d / "executor_output.json").is_file() else missing).append(d.name)
    if missing:
        raise StepFailed(f"steps without an executor record (did not finish): {', '.join(missing)}")
    return done


def run_in_containers(pipeline_func, arguments: dict[str, Any], pipeline_root: str | Path,
                      network: str = "host") -> Path:
    """Run ``pipeline_func(**arguments)`` with kfp's DockerRunner: each step in the image its task names,
    as uid 1000, with the environment its task sets and nothing else (kfp passes the task's env only), on
    the ``network`` (host: the services on 127.0.0.1 answer as they would at their cluster addresses).
    Nothing is mounted but what kfp mounts: the pipeline root (at the same path) and the workspace
    (``<pipeline_root>/workspace``). Returns the run's folder, every step checked."""
    from kfp import local

    root = Path(pipeline_root).resolve()
    workspace = root / "workspace"
    for d in (root, workspace):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o777)  # the steps write here as uid 1000, not as the user running this
    before = {p.name for p in root.iterdir()}
    runner = local.DockerRunner(user=CONTAINER_USER, network_mode=network)
    local.init(runner=runner, pipeline_root=str(root), workspace_root=str(workspace), raise_on_error=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        try:
            pipeline_func(**arguments)
        except Exception as e:  # kfp raises RuntimeError, or ValueError when a later task misses a failed one's outputs
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StepFailed(f"the container run failed: {first}") from e
    new = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime)
    if not new:
        raise StepFailed(f"the container run left no run folder under {root}")
    check_outcomes(new[-1])
    return new[-1]


def _host_paths(cfg: RunConfig) -> list[str]:
    """The recipe's input paths that name this machine's file system (not a URI, not the workspace)."""
    paths = [cfg.data.input, cfg.data.image_root] + [b.data for b in cfg.eval.benchmarks]
    return [str(p) for p in paths if p and "://" not in str(p) and not str(p).startswith(CONTAINER_WORK_DIR)]


def run_pipeline_in_containers(cfg: RunConfig, pipeline_root: str | Path,
                               secrets: Mapping[str, Mapping[str, str]] | None = None,
                               run_id: str | None = None) -> LocalRunResult:
    """The whole compiled pipeline of ``cfg`` in containers (:func:`run_in_containers`): every step in the
    image ``cfg.platform`` names, with the environment of :func:`step_environments` (``secrets``: the
    contents of the secrets the recipe's ``platform.secrets`` maps, secret name -> key -> value). A recipe
    without ``platform.secrets`` gets the cluster manifests' mapping
    (``sifthinker.cluster.local_platform.SECRET_MAP``)."""
    from sifthinker.cluster.local_platform import with_secret_map

    host_paths = _host_paths(cfg)
    if host_paths:
        raise ValueError("a container cannot read these paths of this machine (nothing of it is mounted, as on a "
                         f"cluster): {', '.join(host_paths)}; put the data on S3 or in the workspace")
    run_id = run_id or f"docker-{_stamp()}-{uuid.uuid4().hex[:6]}"
    cfg = with_secret_map(dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, workspace_pvc=None)))
    envs = step_environments(cfg, secrets or {}, run_id)
    root = Path(pipeline_root).resolve()
    host_events(root).unlink(missing_ok=True)  # a fresh file for this run's stage lines
    pipeline = _pipeline(cfg, retries=False, step_env=envs)
    run_dir = run_in_containers(pipeline, {"recipe": recipe_parameter(cfg), "apply_deployment": False}, root)
    return _collect(run_id, root, run_dir)
