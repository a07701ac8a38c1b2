"""Training as a Kubeflow TrainJob: the manifest (checked against Trainer's CRD), and create / wait / stream
logs / fail through the real ``kubernetes`` client talking to a local **stand-in** of the Kubernetes API.

``KubeStandIn`` is a stand-in, not a cluster: an HTTP server on 127.0.0.1 that answers the few API calls
the client makes (TrainJobs, pods, pod logs) and plays the Trainer controller and the kubelet from a
script: ``Scripted`` walks the job through fixed statuses and writes what rank 0 would write;
``Executing`` runs the TrainJob's own command, one process per node with the ``PET_*`` variables
Trainer's torch plugin sets, so the command, environment and handoff paths are exercised for real.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from helpers import gpu_trainjob, make_cfg, make_records, send_json
from kfp.dsl import Dataset, Model

from sifthinker.cluster import crds
from sifthinker.config.platform_config import SecretEnv
from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.names import Env
from sifthinker.serving.process import free_port
from sifthinker.training.trainjob import build_trainjob, job_files, job_name, run_as_trainjob
from sifthinker.training.trainjob_client import TrainJobClient, TrainJobError, TrainJobFailed

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # components/ lives at the repository root
    sys.path.insert(0, str(REPO))
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs"


# ---- the stand-in ----------------------------------------------------------------------------------
def _pod(name: str, index: int, phase: str, exit_code: int | None = None, reason: str = "") -> dict:
    state = ({"terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error")}}
             if exit_code is not None else {"running": {}})
    return {"metadata": {"name": f"{name}-node-0-{index}-x", "namespace": "team-a",
                         "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                                    "batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "node", "image": "img", "imageID": "", "ready": True,
                                              "restartCount": 0, "state": state}]}}


def _condition(kind: str, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


class Scripted:
    """Trainer and kubelet played from a script: created -> running (logs) -> Complete or Failed."""

    def __init__(self, work: Path, fail: tuple[str, str] | None = None):
        self.work, self.fail, self.polls = work, fail, 0

    def local(self, remote: str) -> Path:
        return self.work / Path(remote).relative_to("/workspace")

    def created(self, job: dict) -> None:
        if self.fail:
            return
        cmd = job["spec"]["trainer"]["command"]  # what rank 0 leaves on the volume
        out = self.local(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"trained": true}')
        self.local(cmd[cmd.index("--result") + 1]).write_text(json.dumps(
            {"output_dir": "/workspace/x", "metrics": {"final_loss": 0.5}, "history": [{"step": 1.0, "loss": 0.5}],
             "mlflow_run_id": "run-7"}))

    def status(self, job: dict) -> dict:
        self.polls += 1
        if self.polls == 1:
            return {}
        running = {"jobsStatus": [{"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0,
                                   "suspended": 0}]}
        if self.polls < 4:
            return running
        if self.fail:
            return {**running, "conditions": [_condition("Failed", *self.fail)]}
        return {"conditions": [_condition("Complete", "JobsCompleted", "TrainJob is completed")]}

    def pods(self, job: dict) -> list[dict]:
        name = job["metadata"]["name"]
        if self.polls < 2:
            return []
        if self.fail and self.polls >= 4:
            return [_pod(name, 0, "Failed", 1), _pod(name, 1, "Failed", 137, "OOMKilled")]
        return [_pod(name, 0, "Running"), _pod(name, 1, "Running")]

    def log(self, pod: str):
        yield from [f"{pod}: loading the model\n", f"{pod}: step 1 loss 0.5\n"]


class Executing:
    """The kubelet for real: each node runs the TrainJob's command with Trainer's PET_* variables; the
    workspace volume is the test's work folder (``/workspace`` in paths and variables is mapped to it)."""

    def __init__(self, work: Path, env: dict[str, str]):
        self.work, self.env, self.procs, self.logs = work, env, [], []

    def map(self, s: str) -> str:
        return s.replace("/workspace", str(self.work))

    def created(self, job: dict) -> None:
        t = job["spec"]["trainer"]
        cmd = [sys.executable if c == "python" else self.map(c) for c in t["command"]]
        env = {**os.environ, **self.env, **{e["name"]: self.map(e["value"]) for e in t["env"] if "value" in e}}
        port = str(free_port())
        for rank in range(t["numNodes"]):
            pet = {"PET_NNODES": str(t["numNodes"]), "PET_NPROC_PER_NODE": str(t["numProcPerNode"]),
                   "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port}
            log = self.work / f"node-{rank}.log"
            self.logs.append(log)
            with log.open("w") as f:
                self.procs.append(subprocess.Popen(cmd, env={**env, **pet}, stdout=f, stderr=subprocess.STDOUT))

    def status(self, job: dict) -> dict:
        codes = [p.poll() for p in self.procs]
        if any(c not in (None, 0) for c in codes):
            return {"conditions": [_condition("Failed", "FailedJobs", f"node exit codes {codes}")]}
        if all(c == 0 for c in codes):
            return {"conditions": [_condition("Complete", "JobsCompleted", "TrainJob is completed")]}
        return {"jobsStatus": [{"name": "node", "active": len(codes), "ready": len(codes), "succeeded": 0,
                                "failed": 0, "suspended": 0}]}

    def pods(self, job: dict) -> list[dict]:
        name = job["metadata"]["name"]
        return [_pod(name, i, "Running" if p.poll() is None else "Succeeded" if p.poll() == 0 else "Failed",
                     p.poll()) for i, p in enumerate(self.procs)]

    def log(self, pod: str):
        i = int(pod.split("-")[-2])
        with self.logs[i].open() as f:
            while True:
                line = f.readline()
                if line:
                    yield line
                elif self.procs[i].poll() is not None:
                    yield from f.readlines()
                    return
                else:
                    time.sleep(0.2)


class KubeStandIn:
    """A stand-in for the Kubernetes API server (see the module docstring); records every request."""

    def __init__(self, script, existing: dict | None = None):
        self.script, self.jobs, self.requests = script, {}, []
        if existing:
            self.jobs[existing["metadata"]["name"]] = existing
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                send_json(self, code, body)

            def _record(self) -> tuple[str, dict, dict | None]:
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                standin.requests.append((self.command, u.path, parse_qs(u.query), body,
                                         self.headers.get("Authorization")))
                return u.path, parse_qs(u.query), body

            def do_POST(self):
                path, _, body = self._record()
                name = body["metadata"]["name"]
                if path != TRAINJOBS:
                    return self._send(404, {"kind": "Status", "message": "not found", "code": 404})
                if name in standin.jobs:
                    return self._send(409, {"kind": "Status", "message": f"trainjobs {name} already exists"})
                standin.jobs[name] = {**body, "metadata": {**body["metadata"], "uid": "u-1"}}
                standin.script.created(body)
                self._send(201, standin.jobs[name])

            def do_DELETE(self):
                path, _, _ = self._record()
                standin.jobs.pop(path.rsplit("/", 1)[-1], None)
                self._send(200, {"kind": "Status", "status": "Success"})

            def do_GET(self):
                path, query, _ = self._record()
                if path.startswith(TRAINJOBS + "/"):
                    job = standin.jobs.get(path.rsplit("/", 1)[-1])
                    if job is None:
                        return self._send(404, {"kind": "Status", "message": "not found", "code": 404})
                    if "status" not in job:  # a job created here: the script decides its status
                        return self._send(200, {**job, "status": standin.script.status(job)})
                    return self._send(200, job)
                if path == "/api/v1/namespaces/team-a/pods":
                    name = query["labelSelector"][0].split("=", 1)[1]
                    pods = standin.script.pods(standin.jobs[name]) if name in standin.jobs else []
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
                if path.startswith("/api/v1/namespaces/team-a/pods/") and path.endswith("/log"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()  # no length: the stream ends when the container does (HTTP/1.0 close)
                    for line in standin.script.log(path.split("/")[-2]):
                        self.wfile.write(line.encode())
                        self.wfile.flush()
                    return None
                return self._send(404, {"kind": "Status", "message": f"no route {path}", "code": 404})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, *_ in self.requests]

    def close(self) -> None:
        self.server.shutdown()


# ---- fixtures --------------------------------------------------------------------------------------
def _cfg(work: Path, **platform) -> RunConfig:
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.model.tiny.pretrain_steps = 0  # the copy pre-training has its own test (test_model)
    tj = dataclasses.replace(cfg.platform.train_job, enabled=True, poll_seconds=0.05)
    plat = dataclasses.replace(cfg.platform, **{"workspace_pvc": "sifthinker-workspace", "train_job": tj, **platform})
    return dataclasses.replace(cfg, work_dir=str(work), platform=plat)


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """Start a stand-in with a script; the real client finds it through a kube config (token auth)."""
    servers = []

    def start(script, existing=None) -> KubeStandIn:
        s = KubeStandIn(script, existing)
        servers.append(s)
        conf = {"apiVersion": "v1", "kind": "Config", "current-context": "standin",
                "clusters": [{"name": "standin", "cluster": {"server": s.url}}],
                "users": [{"name": "dev", "user": {"token": "standin-token"}}],
                "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "dev",
                                                             "namespace": "team-a"}}]}
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(conf))
        return s

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    monkeypatch.setenv(Env.PIPELINE_RUN, "run-1")
    monkeypatch.setenv(Env.EVENTS, str(tmp_path / "events.jsonl"))
    yield start
    for s in servers:
        s.close()


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A small valid train split (the stages check their data before they start) and a model folder."""

    make_records(tmp_path / "train", n=4)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}")
    return tmp_path / "train", tmp_path / "sft"


# ---- the manifest ----------------------------------------------------------------------------------


def test_the_multi_node_trainjob_validates_against_trainers_crd(crd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_POD_NAME", "sifthinker-grpo-sif-pod")
    monkeypatch.setenv("KFP_POD_UID", "0b9c-uid")
    job = gpu_trainjob(tmp_path)
    assert crds.violations(job, crd_dir) == []
    t = job["spec"]["trainer"]
    assert (t["numNodes"], t["numProcPerNode"]) == (2, 8)
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert t["command"][:5] == ["python", "-m", "torch.distributed.run", "-m", "sifthinker.training.worker"]
    assert t["command"][5] == "grpo-sif" and "--nnodes" not in t["command"]  # torchrun reads PET_NNODES
    assert {"name": "SIFTHINKER_WORK_DIR", "value": "/workspace"} in t["env"]
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in t["env"] if "valueFrom" in e}
    assert secret_env["MLFLOW_TRACKING_URI"] == "sifthinker-mlflow"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["env"] if "valueFrom" in e}
    assert all(r.get("optional") is True for n, r in refs.items() if n != "MLFLOW_TRACKING_URI"), refs
    assert job["spec"]["runtimeRef"] == {"name": "sifthinker-torch", "apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime"}
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    spec = pod["template"]["spec"]["template"]["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "sifthinker-workspace"}} in spec["volumes"]
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu" and spec["serviceAccountName"] == "sifthinker-train"
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod",
                                                   "name": "sifthinker-grpo-sif-pod", "uid": "0b9c-uid"}]
    assert job["metadata"]["labels"]["sifthinker.io/pipeline-run"] == "3f2c9a1e-77aa-4c1e-9b1b-0c9d8e7f6a5b"


def test_a_broken_trainjob_fails_crd_validation(crd_dir, tmp_path):
    job = gpu_trainjob(tmp_path)
    job["spec"]["trainer"]["numNodes"] = "two"
    job["spec"]["runtimePatches"][0].pop("manager")
    probs = crds.violations(job, crd_dir)
    assert any(p.startswith("spec.trainer.numNodes") for p in probs), probs
    assert any("manager" in p for p in probs), probs


def test_job_names_are_stable_dns_labels():
    a, b = job_name("grpo-sif", "run-1"), job_name("grpo-sif", "run-2")
    assert a == job_name("grpo-sif", "run-1") != b and a != job_name("sft", "run-1")
    assert len(a) <= 40 and a.startswith("sifthinker-grpo-sif-")


def test_without_a_workspace_volume_it_is_a_config_error(kube, tmp_path):
    kube(Scripted(tmp_path / "work"))
    cfg = _cfg(tmp_path / "work", workspace_pvc=None)
    train, sft = _inputs(tmp_path)
    with pytest.raises(ConfigError, match="platform.workspace_pvc"):
        run_as_trainjob("sft", cfg, train, sft, tmp_path / "out")


# ---- create, wait, stream, fail ----------------------------------------------------------------------
def test_a_step_trains_through_a_trainjob_and_hands_the_model_on(kube, tmp_path, crd_dir, monkeypatch):
    """grpo-sif's component body -> run_grpo -> run_stage's dispatch -> TrainJob -> the model artifact."""
    from components.conftest import artifact, stage_events
    from components.grpo_sif.component import grpo_sif
    from sifthinker.runtime.stages import recipe_parameter

    standin = kube(Scripted(tmp_path / "work"))
    monkeypatch.setenv("KFP_POD_NAME", "run-1-grpo-sif-pod")
    monkeypatch.setenv("KFP_POD_UID", "uid-7")
    cfg = _cfg(tmp_path / "work", nodes=2, secrets=[SecretEnv("sifthinker-mlflow", {"tracking-uri": "MLFLOW_TRACKING_URI"})])
    train, sft = _inputs(tmp_path)
    model = artifact(Model, tmp_path / "grpo")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sifthinker.training.trainjob._print", lines.append)
        grpo_sif.python_func(recipe=recipe_parameter(cfg), pipeline_run="run-1", train_data=artifact(Dataset, train),
                             sft_model=artifact(Model, sft), model=model)
    assert json.loads((tmp_path / "grpo" / "config.json").read_text()) == {"trained": True}
    assert model.metadata["mlflow_run_id"] == "run-7" and model.metadata["metrics"] == {"final_loss": 0.5}
    assert stage_events(tmp_path / "work")[-1][:2] == ("done", "grpo-sif")
    # what the real client sent: a look for an earlier attempt's job, the job (valid for Trainer's CRD),
    # then polls, pod lists and log follows, all with the kube context's token
    name = job_name("grpo-sif", "run-1")
    assert standin.calls()[:2] == [("GET", f"{TRAINJOBS}/{name}"), ("POST", TRAINJOBS)]
    assert {auth for *_, auth in standin.requests} == {"Bearer standin-token"}
    body = standin.requests[1][3]
    assert crds.violations(body, crd_dir) == [] and body["spec"]["trainer"]["numNodes"] == 2
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-7"  # cancelling the run stops the job
    cmd = body["spec"]["trainer"]["command"]
    assert cmd[cmd.index("--train-dir") + 1] == f"/workspace/trainjobs/{body['metadata']['name']}/train"
    logs = [q for m, p, q, *_ in standin.requests if p.endswith("/log")]
    assert logs and all(q["follow"][0].lower() == "true" and q["container"] == ["node"] for q in logs)
    assert standin.calls().count(("GET", f"{TRAINJOBS}/{name}")) >= 4  # polled until Complete
    # and what the step's log shows
    assert any(line.startswith("[node-1] ") and "step 1 loss 0.5" in line for line in lines), lines
    assert any("node: 2 ready, 2 active" in line for line in lines), lines
    assert any("Complete=True (JobsCompleted)" in line for line in lines), lines
    assert not (tmp_path / "work" / "trainjobs" / body["metadata"]["name"]).exists()  # handoff cleaned up


def test_a_failed_trainjob_fails_the_step_with_its_reason(kube, tmp_path):
    from components.conftest import artifact, stage_events
    from components.grpo_sif.component import grpo_sif
    from sifthinker.runtime.stages import recipe_parameter

    kube(Scripted(tmp_path / "work", fail=("FailedJobs", 'jobset failed: job "node" has failed')))
    cfg = _cfg(tmp_path / "work", nodes=2)
    train, sft = _inputs(tmp_path)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(TrainJobFailed) as err:
        mp.setattr("sifthinker.training.trainjob._print", lambda line: None)
        grpo_sif.python_func(recipe=recipe_parameter(cfg), pipeline_run="run-1", train_data=artifact(Dataset, train),
                             sft_model=artifact(Model, sft), model=artifact(Model, tmp_path / "grpo"))
    assert err.value.reason == "FailedJobs"
    msg = str(err.value)
    assert 'failed: FailedJobs: jobset failed: job "node" has failed' in msg
    assert "node-1: OOMKilled (exit 137)" in msg and "node-0: Error (exit 1)" in msg
    event, stage, error = stage_events(tmp_path / "work")[-1]
    assert (event, stage) == ("failed", "grpo-sif") and "FailedJobs" in error
    assert not (tmp_path / "grpo").exists()


def test_a_retried_step_replaces_a_failed_job_and_attaches_to_a_running_one(kube, tmp_path):
    name = job_name("sft", "run-1")
    failed = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
              "metadata": {"name": name, "namespace": "team-a"},
              "status": {"conditions": [_condition("Failed", "DeadlineExceeded", "too slow")]}}
    standin = kube(Scripted(tmp_path / "work"), existing=failed)
    train, sft = _inputs(tmp_path)
    cfg = _cfg(tmp_path / "work")
    res = run_as_trainjob("sft", cfg, train, sft, tmp_path / "out", echo=lambda line: None)
    assert res.metrics == {"final_loss": 0.5} and (tmp_path / "out" / "config.json").is_file()
    calls = standin.calls()
    assert calls.index(("DELETE", f"{TRAINJOBS}/{name}")) < calls.index(("POST", TRAINJOBS))
    # a second attempt while the job exists (and is not failed) does not create another one
    standin.requests.clear()
    standin.script.created(standin.jobs[name])  # rank 0's files, as the running job will leave them
    run_as_trainjob("sft", cfg, train, sft, tmp_path / "out2", echo=lambda line: None)
    assert ("POST", TRAINJOBS) not in standin.calls() and (tmp_path / "out2" / "config.json").is_file()


def test_api_refusals_are_one_line_with_a_hint(kube, tmp_path):
    standin = kube(Scripted(tmp_path / "work"))
    client = TrainJobClient.from_environment()
    assert client.namespace == "team-a"  # from the kube context
    with pytest.raises(TrainJobError, match=r"HTTP 404: .*is Kubeflow Trainer installed"):
        client.create({"metadata": {"name": "x", "namespace": "other"}})
    assert standin.requests[-1][1] == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/other/trainjobs"


# ---- the real command, on two "nodes" -----------------------------------------------------------------
@pytest.mark.slow
def test_two_nodes_rendezvous_and_train_from_the_trainjob_command(kube, tmp_path, monkeypatch):
    """The TrainJob's own command, run by the stand-in kubelet as two nodes (torchrun, gloo, 127.0.0.1)."""
    pytest.importorskip("trl")

    from sifthinker.model import build_tiny_model, corpus_from_records
    from sifthinker.training.sft import run_sft

    data = tmp_path / "data"
    records = make_records(data, n=4)
    base_cfg = make_cfg(tmp_path / "base")
    base = build_tiny_model(base_cfg, tmp_path / "base" / "model", list(corpus_from_records(records)))
    work = tmp_path / "work"
    cfg = make_cfg(tmp_path)
    cfg = dataclasses.replace(_cfg(work, nodes=2), model=cfg.model, registry=cfg.registry, sft=cfg.sft)
    cfg.sft.warmup_ratio = 0.0
    threads = {"OMP_NUM_THREADS": "1", Env.TORCH_THREADS.value: "1", "HF_HUB_OFFLINE": "1"}
    standin = kube(Executing(work, threads))
    monkeypatch.setenv(Env.WORK_DIR, str(work))
    res = run_sft(cfg, data, base, tmp_path / "out", max_steps=1)
    assert res.mlflow_run_id and len(res.history) == 1 and res.metrics["final_loss"] > 0
    assert (tmp_path / "out" / "config.json").is_file()
    assert len(standin.script.procs) == 2 and all(p.returncode == 0 for p in standin.script.procs)


def test_a_job_in_another_namespace_is_not_owned_by_the_step(kube, tmp_path, monkeypatch):
    """Owners across namespaces do not resolve (the garbage collector would delete the job): none is set."""
    standin = kube(Scripted(tmp_path / "work"))
    monkeypatch.setenv("KFP_POD_NAME", "run-1-sft-pod")
    monkeypatch.setenv("KFP_POD_UID", "uid-8")
    cfg = _cfg(tmp_path / "work")
    cfg.platform.train_job.namespace = "training"
    train, sft = _inputs(tmp_path)
    with pytest.raises(TrainJobError, match="could not create TrainJob training/"):  # the stand-in has no such namespace
        run_as_trainjob("sft", cfg, train, sft, tmp_path / "out", echo=lambda line: None)
    (post,) = [r for r in standin.requests if r[0] == "POST"]
    assert post[1].endswith("/namespaces/training/trainjobs") and "ownerReferences" not in post[3]["metadata"]


def test_the_trainjobs_pods_get_the_training_steps_keys_optional_ones_optional(tmp_path):
    """The nodes start with secrets that hold only the required keys, and get no S3 keys they never use."""
    t = gpu_trainjob(tmp_path)["spec"]["trainer"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["env"] if "valueFrom" in e}
    assert refs["MLFLOW_TRACKING_URI"] == {"name": "sifthinker-mlflow", "key": "tracking-uri"}
    assert refs["HF_TOKEN"] == {"name": "sifthinker-hf", "key": "token", "optional": True}
    assert refs["MLFLOW_TRACKING_PASSWORD"]["optional"] is True
    assert not any(n.startswith("AWS_") for n in refs)  # the recipe's checkpoints are on the PVC, not S3


def test_the_nodes_of_a_grpo_job_with_vllm_rollouts_run_the_images_vllm_environment(tmp_path):
    """The 2x8 recipe rolls out with vLLM: its grpo-sif nodes put the GPU image's vLLM environment first on
    PATH (images/Dockerfile.train); its sft nodes keep the image's default environment."""
    from sifthinker.cluster.step_access import GPU_IMAGE_PATH

    t = gpu_trainjob(tmp_path)["spec"]["trainer"]
    env = {e["name"]: e["value"] for e in t["env"] if "value" in e}
    assert env["PATH"] == f"/opt/venv-vllm/bin:{GPU_IMAGE_PATH}"
    cfg = RunConfig.load(REPO / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml")
    files = job_files(dataclasses.replace(cfg, work_dir=str(tmp_path)), "sifthinker-sft-abc")
    sft = build_trainjob(cfg, "sft", "sifthinker-sft-abc", "team-a", files, "/workspace/data/train", "/x/base")
    assert "PATH" not in {e["name"] for e in sft["spec"]["trainer"]["env"]}
