"""The kustomize manifests, offline: every overlay renders (``kubectl kustomize``); built-in kinds validate
with kubernetes-validate, custom resources against their CRDs (``crd_dir``); the house policy holds; and
the manifests agree with the recipes and the code (service accounts, volumes, runtime, secrets).
``manifests/validate.py`` is what ``make manifests`` runs; each of its checks is shown to catch a break.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sifthinker.config.run_config import RunConfig
from sifthinker.training.trainjob import build_trainjob, job_files

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod", "local", "gpu")
GPU_RECIPES = tuple(sorted(p.name for p in (REPO / "recipes").glob("qwen*.yaml")))  # every cluster recipe

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


def _load_validate():
    spec = importlib.util.spec_from_file_location("manifests_validate", REPO / "manifests" / "validate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


V = _load_validate()
_rendered: dict[str, list[dict]] = {}


def rendered(overlay: str) -> list[dict]:
    if overlay not in _rendered:
        _rendered[overlay] = V.render(REPO / "manifests" / "overlays" / overlay)
    return copy.deepcopy(_rendered[overlay])


def by(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_passes_schemas_and_policy(overlay, crd_dir):
    rep = V.check(REPO / "manifests" / "overlays" / overlay, crd_dir)
    assert rep.violations == []
    custom = [d for d in rep.docs if "kserve.io" in d["apiVersion"] or "kubeflow.org" in d["apiVersion"]]
    assert rep.checked["crd"] == len(custom) > 0  # every custom resource met its CRD
    assert rep.checked["core"] == len(rep.docs) - len(custom)  # every other object had a built-in schema


def test_the_platform_overlays_hold_the_whole_platform():
    for overlay in ("dev", "prod"):
        docs = rendered(overlay)
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert {("Namespace", "sifthinker"), ("Deployment", "mlflow"), ("Service", "mlflow"),
                ("Role", "sifthinker-pipeline"), ("RoleBinding", "sifthinker-pipeline"),
                ("PersistentVolumeClaim", "sifthinker-workspace"), ("InferenceService", "sifthinker"),
                ("ServingRuntime", "sifthinker"), ("ClusterTrainingRuntime", "sifthinker-torch")} <= kinds, overlay
        assert not [d for d in docs if d["kind"] == "Secret"]  # templates only, created by hand
    assert ("StatefulSet", "sifthinker-postgres") in {(d["kind"], d["metadata"]["name"]) for d in rendered("dev")}
    prod = rendered("prod")
    assert by(prod, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "mlflow"
    assert by(prod, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_mlflow_runs_on_postgres_and_s3_with_allowed_hosts_and_probes(overlay):
    dep = by(rendered(overlay), "Deployment", "mlflow")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][0] == "server" and "--serve-artifacts" in c["args"]
    flags = dict(a.split("=", 1) for a in c["args"] if "=" in a)
    assert flags["--backend-store-uri"] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert flags["--port"] == "5000" and flags["--host"] == "0.0.0.0"
    assert flags["--allowed-hosts"] == "$(MLFLOW_ALLOWED_HOSTS)"
    assert flags["--workers"] == {"dev": "1", "prod": "4"}[overlay]
    env = {e["name"]: e.get("valueFrom", e.get("value")) for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"] == {"secretKeyRef": {"name": "sifthinker-mlflow-db", "key": "backend-store-uri"}}
    cm = by(rendered(overlay), "ConfigMap", "sifthinker-mlflow-config")["data"]
    assert cm["artifacts-destination"].startswith("s3://")
    assert "mlflow.sifthinker.svc:5000" in cm["allowed-hosts"].split(",")
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["initContainers"][0]["command"][-1].startswith("exec mlflow db upgrade")


def test_rbac_is_namespaced_and_least_privilege():
    docs = rendered("prod")
    role = by(docs, "Role", "sifthinker-pipeline")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {"create", "patch"} <= rules[("serving.kserve.io", "inferenceservices")]
    assert {"create", "patch", "get", "delete"} <= rules[("trainer.kubeflow.org", "trainjobs")]
    assert rules[("", "pods")] == {"get", "list", "watch"} and rules[("", "pods/log")] == {"get"}
    assert "delete" not in rules[("serving.kserve.io", "inferenceservices")]
    binding = by(docs, "RoleBinding", "sifthinker-pipeline")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sifthinker-pipeline", "namespace": "sifthinker"}]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for sa in ("sifthinker-train", "sifthinker-mlflow", "sifthinker-serve"):  # no API access, no token
        assert by(docs, "ServiceAccount", sa)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_recipes_name_what_the_manifests_create(recipe):
    cfg = RunConfig.load(REPO / "recipes" / recipe)
    docs = rendered("prod")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    p = cfg.platform
    assert ("ServiceAccount", p.service_account) in names
    if cfg.serving.service_account:  # KServe's storage initializer reads S3 through this one
        assert ("ServiceAccount", cfg.serving.service_account) in names
    assert ("PersistentVolumeClaim", p.workspace_pvc) in names
    assert ("ClusterTrainingRuntime", p.train_job.runtime) in names
    assert ("ServiceAccount", p.train_job.service_account) in names
    if p.train_job.checkpoint_pvc:
        assert ("PersistentVolumeClaim", p.train_job.checkpoint_pvc) in names
    templates = _secret_templates()
    for s in p.secrets:  # every secret a step reads has a template with that key
        assert s.secret in templates, s.secret
        assert set(s.env) <= set(templates[s.secret]), (s.secret, set(s.env) - set(templates[s.secret]))


def test_the_trainjob_patches_volumes_the_runtime_mounts(tmp_path):
    """sifthinker.training.trainjob patches the runtime's volumes by name: the names must be the runtime's."""
    runtime = by(rendered("prod"), "ClusterTrainingRuntime", "sifthinker-torch")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    (node,) = pod["containers"]
    assert node["name"] == "node"  # the container Trainer's torch plugin and our patches address
    mounts = {m["name"]: m["mountPath"] for m in node["volumeMounts"]}
    assert mounts["workspace"] == "/workspace" and mounts["dshm"] == "/dev/shm"
    cfg = RunConfig.load(REPO / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml")
    job = build_trainjob(cfg, "sft", "j", "sifthinker", job_files(cfg, "j"), "/workspace/t", "m")
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    volumes = {v["name"] for v in patch["template"]["spec"]["template"]["spec"]["volumes"]}
    assert {"workspace", "dshm"} <= volumes <= {*mounts, "checkpoints"}
    env = {e["name"]: e["value"] for e in node["env"]}
    assert env["SIFTHINKER_WORK_DIR"] == "/workspace"


def _secret_templates() -> dict[str, dict[str, str]]:
    out = {}
    for p in sorted((REPO / "manifests" / "base" / "secrets").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text())
        assert doc["kind"] == "Secret" and p.stem == doc["metadata"]["name"]
        out[doc["metadata"]["name"]] = doc.get("stringData") or {}
    return out


def test_secrets_are_templates_without_values_and_cover_every_reference():
    templates = _secret_templates()
    assert all(v == "" for keys in templates.values() for v in keys.values())  # no value is ever stored
    refs = set()
    for overlay in OVERLAYS:
        text = yaml.safe_dump_all(rendered(overlay))
        for d in rendered(overlay):
            for node in _walk(d):
                if isinstance(node, dict) and "secretKeyRef" in node:
                    refs.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
        assert "kind: Secret\n" not in text
    assert refs and {(n, k) for n, k in refs if k not in templates.get(n, {})} == set()
    sa = by(rendered("dev"), "ServiceAccount", "sifthinker-serve")
    assert {s["name"] for s in sa["secrets"]} <= set(templates)


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for c in children:
        yield from _walk(c)


def test_prod_serves_on_gpus_and_scales_dev_on_cpu():
    isvc = by(rendered("prod"), "InferenceService")["spec"]["predictor"]
    assert isvc["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["tolerations"][0]["key"] == "nvidia.com/gpu" and isvc["maxReplicas"] > isvc["minReplicas"]
    assert isvc["scaleMetric"] == "concurrency"
    dev = by(rendered("dev"), "InferenceService")
    assert dev["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert dev["spec"]["predictor"]["containers"][0]["image"].endswith("/sifthinker-serve-cpu:0.1.0")
    assert "nvidia.com/gpu" not in dev["spec"]["predictor"]["containers"][0]["resources"]["limits"]


# ---- each check catches what it is for ------------------------------------------------------------
def test_the_policy_catches_each_kind_of_break():
    docs = rendered("dev")
    dep = by(docs, "Deployment", "mlflow")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["image"] = "ghcr.io/sifthinker/sifthinker-mlflow:latest"
    del c["resources"]["limits"]
    c["securityContext"] = {"runAsUser": 0}
    dep["spec"]["template"]["spec"]["securityContext"] = {}
    c["env"].append({"name": "DB_PASSWORD", "value": "hunter2"})
    c["args"].append("--backend-store-uri=postgresql://mlflow:hunter2@db:5432/mlflow")
    pg = by(docs, "StatefulSet", "sifthinker-postgres")["spec"]["template"]["spec"]["containers"][0]
    pg["image"] = "postgres"
    del pg["readinessProbe"]
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "sifthinker"},
                 "stringData": {"password": "hunter2"}})
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
                 "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
    by(docs, "Role")["rules"][0]["verbs"] = ["*"]
    by(docs, "ConfigMap")["metadata"]["namespace"] = "default"
    probs = "\n".join(V.policy_violations(docs))
    for expected in ("uses the latest tag", "resources.limits lacks cpu, memory", "runAsNonRoot is not set",
                     "runs as uid 0", "allowPrivilegeEscalation must be false", "capabilities must drop ALL",
                     "readOnlyRootFilesystem is not true", "env DB_PASSWORD has an inline value",
                     "carries a password", "has no tag (means latest)", "no readinessProbe",
                     "Secret/s: a Secret with values", "ClusterRole/r: cluster-wide permissions",
                     "Role/sifthinker-pipeline: rules[0] uses a wildcard",
                     "ConfigMap/sifthinker-mlflow-config: namespace 'default'"):
        assert expected in probs, expected
    assert V.policy_violations(rendered("dev")) == []


def test_schema_checks_catch_unknown_fields_and_wrong_types(crd_dir):
    docs = rendered("prod")
    c = by(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    c["imagePullPolcy"] = "Always"  # a typo the API server would drop silently without strict checking
    by(docs, "PersistentVolumeClaim", "sifthinker-workspace")["spec"]["accessModes"] = "ReadWriteMany"
    probs, _ = V.core_violations(docs)
    assert any("'imagePullPolcy' was unexpected" in p for p in probs), probs
    assert any(p.startswith("PersistentVolumeClaim/sifthinker-workspace: spec.accessModes") for p in probs), probs
    rt = by(docs, "ClusterTrainingRuntime")
    rt["spec"]["mlPolicy"]["numNodes"] = "2"
    probs, _ = V.crd_violations(docs, crd_dir)
    assert any(p.startswith("ClusterTrainingRuntime/sifthinker-torch: spec.mlPolicy.numNodes") for p in probs), probs


def test_make_manifests_renders_and_validates_all_overlays(crd_dir, tmp_path):
    env = {**os.environ, "CRD_DIR": str(crd_dir)}
    out = subprocess.run(["make", "-s", "manifests"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [ln.split()[0:2] for ln in out.stdout.splitlines() if ln.startswith("ok")] == [
        ["ok", f"{REPO / 'manifests' / 'overlays' / o}:"] for o in sorted(OVERLAYS)]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    bad = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "manifests/validate.py", str(broken)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "kubectl kustomize" in bad.stdout
