"""Deploy: InferenceService built with KServe's typed models, CRD validation (sifthinker.cluster.crds), kustomize
overlays, deploy() and `sifthinker deploy`, and deploy from a copy of the repository with nothing beside it.

CRD schema tests take the ``crd_dir`` fixture (conftest: ``$CRD_DIR``, else ``../shared/crds``, else skip);
everything else must pass without any CRD folder, as on a user's clone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import kserve
import pytest
import yaml
from click.testing import CliRunner
from standin_kube_api import StandInKubeAPI

from sifthinker.cli import main
from sifthinker.cluster import crds
from sifthinker.config.platform_config import GPUConfig, SecretEnv, Toleration
from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env
from sifthinker.registry import model_versions
from sifthinker.serving import deploy as dp
from sifthinker.serving.process import free_port

REPO = Path(__file__).resolve().parents[2]
LOCAL = str(REPO / "recipes" / "local.yaml")
KINDS = {"InferenceService", "ServingRuntime"}
TYPED_LINE = "validated by KServe's typed models (set CRD_DIR to also check the CRD schema)"


@pytest.fixture(autouse=True)
def _no_crd_dir(monkeypatch):
    # every test starts as a user's clone does: no CRD folder; CRD tests pass the fixture's folder
    monkeypatch.delenv(Env.CRD_DIR, raising=False)


def _cfg(**serving) -> RunConfig:
    cfg = RunConfig.load(LOCAL)
    return dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, **serving))


def _gpu_cfg() -> RunConfig:
    cfg = _cfg(gpu=2, service_account="sifthinker-serve")
    gpu = GPUConfig(
        count=8, node_selector={"nvidia.com/gpu.product": "H100"}, shm_size="16Gi", memory="64Gi",
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists")],
    )  # fmt: skip
    platform = dataclasses.replace(
        cfg.platform, gpu=gpu, env={"NCCL_DEBUG": "WARN"}, secrets=[SecretEnv("sifthinker-s3", {"key-id": "AWS_ACCESS_KEY_ID"})]
    )
    return dataclasses.replace(cfg, platform=platform)


def _container(manifest: dict) -> dict:
    (c,) = manifest["spec"]["predictor"]["containers"]
    return c


def _env(manifest: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(manifest)["env"]}


# ---- the typed models --------------------------------------------------------------------------------
def test_typed_models_build_the_expected_manifest():
    cfg = _gpu_cfg()
    isvc = dp.build_inference_service(cfg, "s3://b/m", "7", source="s3://b/m")
    assert isinstance(isvc, kserve.V1beta1InferenceService)
    assert isinstance(isvc.spec.predictor, kserve.V1beta1PredictorSpec)
    m = dp.to_manifest(isvc)
    assert m == dp.render_inference_service(cfg, "s3://b/m", "7", source="s3://b/m")
    recipe_yaml = _env(m)["SIFTHINKER_RECIPE_YAML"]
    assert RunConfig.from_dict(yaml.safe_load(recipe_yaml)) == cfg
    amounts = {"cpu": "4", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert m == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "sifthinker",
            "namespace": "default",
            "labels": {
                "app.kubernetes.io/name": "sifthinker",
                "app.kubernetes.io/component": "predictor",
                "app.kubernetes.io/part-of": "sifthinker",
                "sifthinker.io/model-version": "7",
            },
            "annotations": {
                "sifthinker.io/model-name": "sifthinker-local",
                "sifthinker.io/model-version": "7",
                "sifthinker.io/model-uri": "models:/sifthinker-local/7",
                "sifthinker.io/recipe": "local",
                "sifthinker.io/runtime": "native",
                "sifthinker.io/model-source": "s3://b/m",
                "sifthinker.io/storage-uri": "s3://b/m",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 1,
                "timeout": 600,
                "serviceAccountName": "sifthinker-serve",
                "nodeSelector": {"nvidia.com/gpu.product": "H100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "ghcr.io/sifthinker/sifthinker-serve:0.1.0",
                        "command": ["sifthinker"],
                        "args": ["serve", "--model", "/mnt/models", "--name", "sifthinker", "--host", "0.0.0.0",
                                 "--port", "8080", "--max-new-tokens", "512",
                                 "--alias", "sifthinker-local", "--alias", "models:/sifthinker-local/7"],
                        "env": [
                            {"name": "HF_HUB_OFFLINE", "value": "1"},
                            {"name": "SIFTHINKER_RECIPE_YAML", "value": recipe_yaml},
                            {"name": "SIFTHINKER_WORK_DIR", "value": "/tmp/sifthinker"},
                            {"name": "STORAGE_URI", "value": "s3://b/m"},
                            {"name": "NCCL_DEBUG", "value": "WARN"},
                            {"name": "AWS_ACCESS_KEY_ID",
                             "valueFrom": {"secretKeyRef": {"name": "sifthinker-s3", "key": "key-id"}}},
                        ],
                        "ports": [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}],
                        "resources": {"requests": amounts, "limits": amounts},
                        "readinessProbe": {
                            "httpGet": {"path": "/v2/models/sifthinker/ready", "port": 8080},
                            "periodSeconds": 10,
                            "failureThreshold": 3,
                        },
                        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                    }
                ],
            }
        },
    }  # fmt: skip
    # the written YAML is plain data (no enum members, no model objects)
    assert yaml.safe_load(yaml.safe_dump(m)) == m


def test_registry_pull_manifest_mounts_a_model_cache():
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, tracking_uri="http://mlflow.mlflow:5000"))
    m = dp.render_inference_service(cfg, None, "4")
    c = _container(m)
    assert c["args"][:3] == ["serve", "--model", "models:/sifthinker-local/4"]
    env = _env(m)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow:5000" and env["SIFTHINKER_MODEL_CACHE"] == dp.MODEL_CACHE
    assert "STORAGE_URI" not in env and "sifthinker.io/storage-uri" not in m["metadata"]["annotations"]
    assert c["volumeMounts"] == [{"name": "model-cache", "mountPath": dp.MODEL_CACHE}]
    assert m["spec"]["predictor"]["volumes"] == [{"name": "model-cache", "emptyDir": {}}]
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "tolerations" not in m["spec"]["predictor"]


def test_typed_validation_rejects_what_the_models_accept_but_kubernetes_does_not():
    cfg = _gpu_cfg()
    # set past the recipe loader, which would refuse these values itself
    gpu = dataclasses.replace(cfg.platform.gpu, memory="lots", shm_size="huge")
    cfg = dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, gpu=gpu))
    m = dp.render_inference_service(cfg, "s3://b/m", "1")
    m["metadata"]["name"] = "Sif_Thinker"
    with pytest.raises(crds.ValidationError) as ei:
        dp.validate_manifest(m)
    assert ei.value.violations == [
        "metadata.name: 'Sif_Thinker' must be a DNS-1035 label (lower-case letters, digits and '-', starting with a "
        "letter, at most 63 characters)",
        "spec.predictor.containers[0].resources.limits.memory: 'lots' is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)",
        "spec.predictor.containers[0].resources.requests.memory: 'lots' is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)",
        "spec.predictor.volumes[0].emptyDir.sizeLimit: 'huge' is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)",
    ]
    assert "KServe's typed models" in str(ei.value)
    # a required field left empty (a secret env without its key) is refused by the models themselves
    no_key = dataclasses.replace(cfg.platform, secrets=[SecretEnv("sifthinker-s3", {None: "AWS_ACCESS_KEY_ID"})])
    with pytest.raises(crds.ValidationError, match="Invalid value for `key`, must not be `None`"):
        dp.render_inference_service(dataclasses.replace(cfg, platform=no_key), "s3://b/m", "1")


# ---- CRD schema validation (needs the CRD YAMLs) -------------------------------------------------------
def test_rendered_manifests_validate_against_the_crd(crd_dir, monkeypatch):
    rv = model_versions.RegisteredVersion("sifthinker-local", "3", "mlflow-artifacts:/1/abc/artifacts/model", "abc")
    m = dp.render_inference_service(_cfg(), "s3://models/1/abc/artifacts/model", rv, source=rv.source_uri)
    assert crds.validate(m, crd_dir) is m
    assert m["metadata"]["annotations"]["sifthinker.io/model-uri"] == "models:/sifthinker-local/3"
    gpu = dp.render_inference_service(_gpu_cfg(), "s3://b/m", "7")
    assert crds.violations(gpu, crd_dir) == []
    pull = dp.render_inference_service(_cfg(), None, "4")
    assert crds.violations(pull, crd_dir) == []
    # deploy() with CRD_DIR set validates against those CRDs and says so
    monkeypatch.setenv(Env.CRD_DIR, str(crd_dir))
    r = dp.deploy(_cfg(), "s3://models/sifthinker/1", dry_run=True)
    assert r.validation == f"validated against the CRD schema in {crd_dir.resolve()}"


def test_broken_manifest_lists_every_violation(crd_dir):
    m = dp.render_inference_service(_cfg(), "s3://b/m", "1")
    bad = copy.deepcopy(m)
    bad["metadata"]["name"] = "Sif_Thinker"
    bad["metadata"]["labels"]["replicas"] = 3
    p = bad["spec"]["predictor"]
    p["minReplicas"] = "one"
    p["containers"][0]["imagePullPolicy"] = 7
    p["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    p["containers"][0]["portz"] = []
    del p["containers"][0]["env"][0]["name"]
    p["containers"][0]["env"].append(dict(p["containers"][0]["env"][1]))  # duplicate env name (list-map key)
    with pytest.raises(crds.ValidationError) as ei:
        crds.validate(bad, crd_dir)
    msg = str(ei.value)
    assert msg.startswith("InferenceService/Sif_Thinker: 8 violation(s)") and "serving.kserve.io_inferenceservices.yaml" in msg
    expected = [
        "metadata.name: 'Sif_Thinker' must be a DNS-1035 label",
        "metadata.labels.replicas: value must be a string",
        "spec.predictor.minReplicas: 'one' is not of type 'integer'",
        "spec.predictor.containers[0].imagePullPolicy: 7 is not of type 'string'",
        "spec.predictor.containers[0].resources.limits.cpu: 'lots' is not a Kubernetes quantity",
        "spec.predictor.containers[0]: unknown field(s) ('portz' was unexpected)",
        "spec.predictor.containers[0].env[0]: 'name' is a required property",
        "spec.predictor.containers[0].env: items 1 and",
    ]
    for e in expected:
        assert e in msg, (e, msg)
    assert len(ei.value.violations) == len(expected)
    assert crds.violations(m, crd_dir) == []


def test_crd_folder_comes_from_crd_dir_only(crd_dir, tmp_path, monkeypatch):
    # unset: no folder, and asking for CRD validation says how to get it
    assert crds.crd_dir() is None
    with pytest.raises(crds.NoCRDFolderError, match="set CRD_DIR"):
        crds.validate(dp.render_inference_service(_cfg(), "s3://b/m", "1"))
    # an explicit folder works without the variable
    with pytest.raises(crds.UnknownKindError, match="no CRD for Deployment apps/v1"):
        crds.validate({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}, crd_dir)
    assert crds.violations({"kind": "InferenceService"}, crd_dir) == ["<root>: apiVersion and kind are required"]
    assert ("serving.kserve.io/v1beta1", "InferenceService") in crds.known_kinds(crd_dir)
    # set: that folder; set to a missing folder: an error, not a silent skip
    monkeypatch.setenv(Env.CRD_DIR, str(crd_dir))
    assert crds.crd_dir() == crd_dir.resolve()
    assert ("serving.kserve.io/v1alpha1", "ServingRuntime") in crds.known_kinds()
    monkeypatch.setenv(Env.CRD_DIR, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=f"CRD_DIR={tmp_path / 'missing'} is not a folder"):
        crds.crd_dir()
    monkeypatch.setenv(Env.CRD_DIR, str(tmp_path))
    assert crds.crd_dir() == tmp_path.resolve() and crds.known_kinds() == []
    with pytest.raises(crds.UnknownKindError, match="known: none"):
        crds.validate(dp.render_inference_service(_cfg(), "s3://b/m", "1"))
    # what `kubectl get crd A B -o yaml` writes: one List holding the CRDs
    fast = getattr(yaml, "CSafeLoader", yaml.SafeLoader), getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # a 2 MB CRD
    crd = yaml.load((crd_dir / "serving.kserve.io_inferenceservices.yaml").read_text(), Loader=fast[0])
    (tmp_path / "listed").mkdir()
    listed = {"apiVersion": "v1", "kind": "List", "items": [crd]}
    (tmp_path / "listed" / "crds.yaml").write_text(yaml.dump(listed, Dumper=fast[1]))
    assert crds.known_kinds(tmp_path / "listed") == [("serving.kserve.io/v1beta1", "InferenceService")]
    assert crds.violations(dp.render_inference_service(_cfg(), "s3://b/m", "1"), tmp_path / "listed") == []


def _kustomize(overlay: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return crds.load_documents(out)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", ["local", "gpu"])
def test_kustomize_overlays_render_and_validate(overlay, crd_dir):
    docs = _kustomize(overlay)
    assert crds.validate_documents(docs, crd_dir, kinds=KINDS) == 2
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"ServiceAccount", "InferenceService", "ServingRuntime"}
    assert all(d["metadata"]["namespace"] == "sifthinker" for d in docs)
    isvc = by_kind["InferenceService"]
    c = _container(isvc)
    assert c["args"][:3] == ["serve", "--model", "models:/sifthinker@champion"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]
    assert {"name": "sifthinker-s3"} in by_kind["ServiceAccount"]["secrets"]
    secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert secret_refs == {"sifthinker-mlflow", "sifthinker-s3"}
    if overlay == "gpu":
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert isvc["spec"]["predictor"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        (rc,) = by_kind["ServingRuntime"]["spec"]["containers"]
        assert "nvidia.com/gpu" in rc["resources"]["limits"]
    else:
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
        assert "nvidia.com/gpu" not in c["resources"]["limits"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_a_broken_overlay_fails_validation(crd_dir):
    docs = _kustomize("local")
    for d in docs:
        if d["kind"] == "ServingRuntime":
            d["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    with pytest.raises(crds.ValidationError, match=r"ServingRuntime/sifthinker: spec.supportedModelFormats\[0\].autoSelect"):
        crds.validate_documents(docs, crd_dir, kinds=KINDS)


# ---- deploy(): validation line, dry run, apply ----------------------------------------------------------
def _crd_folder(tmp_path: Path, spec_schema: dict) -> Path:
    """A folder with a hand-written InferenceService CRD whose ``spec`` schema is ``spec_schema``: CRD_DIR
    behaviour tested without KServe's real CRDs."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "inferenceservices.serving.kserve.io"},
        "spec": {
            "group": "serving.kserve.io",
            "names": {"kind": "InferenceService", "plural": "inferenceservices"},
            "versions": [{"name": "v1beta1", "served": True, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "metadata": {"type": "object"}, "spec": spec_schema},
            }}}],
        },
    }  # fmt: skip
    folder = tmp_path / "crds"
    folder.mkdir()
    (folder / "inferenceservices.yaml").write_text(yaml.safe_dump(crd))
    return folder


def test_deploy_reports_which_validation_ran(tmp_path, monkeypatch):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    cfg = _cfg()
    r = dp.deploy(cfg, "s3://models/sifthinker/1", dry_run=True)
    assert r.validation == TYPED_LINE and r.path is None and r.applied is False
    assert r.manifest["kind"] == "InferenceService" and _env(r.manifest)["STORAGE_URI"] == "s3://models/sifthinker/1"
    assert not (tmp_path / "work").exists()  # a dry run writes nothing
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert (d["name"], d["namespace"], d["model_uri"], d["path"], d["applied"], d["warning"]) == (
        "sifthinker", "default", "models:/sifthinker-local/unversioned", None, False, None)  # fmt: skip
    assert r.headline() == f"rendered (dry run) models:/sifthinker-local/unversioned as default/sifthinker; {TYPED_LINE}"
    crds = _crd_folder(tmp_path, {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    monkeypatch.setenv(Env.CRD_DIR, str(crds))
    r = dp.deploy(cfg, "s3://models/sifthinker/1")
    assert r.validation == f"validated against the CRD schema in {crds.resolve()}"
    assert r.path == tmp_path / "work" / "deploy" / "sifthinker-inferenceservice.yaml"
    assert yaml.safe_load(r.path.read_text()) == r.manifest and r.to_dict()["path"] == str(r.path)
    assert r.headline().startswith("wrote models:/sifthinker-local/unversioned as default/sifthinker; validated against")
    with pytest.raises(dp.DeployError, match="a dry run applies nothing"):
        dp.deploy(cfg, "s3://models/sifthinker/1", apply=True, dry_run=True)
    with pytest.raises(dp.DeployError, match="cannot deploy '/some/folder'"):
        dp.deploy(cfg, "/some/folder", dry_run=True)


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """A STAND-IN Kubernetes API (tests/serving/standin_kube_api.py) and a kubeconfig pointing the real client at it."""
    api = StandInKubeAPI()
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.close()


def test_apply_creates_with_a_server_side_dry_run_first_and_waits_for_ready(tmp_path, monkeypatch, kube):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    r = dp.deploy(_cfg(), "s3://models/sifthinker/1", apply=True, out_dir=tmp_path / "out", poll_s=0.05)
    path = tmp_path / "out" / "sifthinker-inferenceservice.yaml"
    assert r.applied is True and r.path == path and r.action == "created"
    assert r.url == "http://sifthinker.default.example.com"
    assert kube.calls[:3] == [("GET", "sifthinker", False), ("POST", "", True), ("POST", "", False)]
    stored = kube.objects[("default", "sifthinker")]
    assert stored["spec"] == r.manifest["spec"] == yaml.safe_load(path.read_text())["spec"]
    assert r.validation == "validated by KServe's typed models and by the cluster (server-side dry run)"
    assert r.headline() == (f"applied models:/sifthinker-local/unversioned as default/sifthinker (ready at {r.url}); "
                            f"{r.validation}")
    assert r.to_dict()["url"] == r.url and r.to_dict()["action"] == "created"


def test_apply_patches_a_canary_then_rolls_forward_and_switches_runtime(tmp_path, monkeypatch, kube):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    cfg = _gpu_cfg()
    with pytest.raises(dp.DeployError, match="does not exist yet: deploy it once without --canary"):
        dp.deploy(cfg, "s3://models/sifthinker/1", apply=True, canary=10, poll_s=0.05)
    assert ("POST", "", False) not in kube.calls
    dp.deploy(cfg, "s3://models/sifthinker/1", apply=True, poll_s=0.05)
    r = dp.deploy(cfg, "s3://models/sifthinker/2", apply=True, canary=10, poll_s=0.05)
    stored = kube.objects[("default", "sifthinker")]
    patches = [c for c in kube.calls if c[0] == "PATCH"]
    assert r.action == "patched" and patches == [("PATCH", "sifthinker", True), ("PATCH", "sifthinker", False)]
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 10 and stored["metadata"]["generation"] == 2
    assert _env(stored)["STORAGE_URI"] == "s3://models/sifthinker/2"
    # without --canary the new version takes all traffic: the field is removed, not left behind
    dp.deploy(cfg, "s3://models/sifthinker/2", apply=True, poll_s=0.05)
    assert "canaryTrafficPercent" not in kube.objects[("default", "sifthinker")]["spec"]["predictor"]
    # to vLLM: the custom container goes, the Hugging Face model spec and the transformer come
    r = dp.deploy(cfg, "s3://models/sifthinker/2", apply=True, runtime="vllm", poll_s=0.05)
    stored = kube.objects[("default", "sifthinker")]
    assert "containers" not in stored["spec"]["predictor"] and stored["spec"] == r.manifest["spec"]
    assert stored["spec"]["predictor"]["model"]["modelFormat"] == {"name": "huggingface"}


def test_apply_stops_when_the_cluster_rejects_the_dry_run_or_never_gets_ready(tmp_path, monkeypatch, kube):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    kube.reject = "admission webhook denied the request: stand-in rejection"
    with pytest.raises(dp.DeployError, match="server-side dry run, nothing applied: admission webhook denied"):
        dp.deploy(_cfg(), "s3://models/sifthinker/1", apply=True, poll_s=0.05)
    assert kube.objects == {} and [c for c in kube.calls if not c[2] and c[0] != "GET"] == []
    kube.reject, kube.ready_after = None, None  # the controller never reports Ready
    cfg = _cfg(ready_timeout_s=0.5)
    with pytest.raises(dp.DeployError, match=r"not Ready after 0.5s \(serving.ready_timeout_s\); last: Ready=False: Creating"):
        dp.deploy(cfg, "s3://models/sifthinker/1", apply=True, poll_s=0.05)
    assert ("default", "sifthinker") in kube.objects  # applied, then reported as not ready


def test_apply_without_a_cluster_configuration_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(dp.DeployError, match="no Kubernetes configuration"):
        dp.deploy(_cfg(), "s3://models/sifthinker/1", apply=True)
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://models/sifthinker/1", "--recipe", LOCAL, "--apply"])
    assert res.exit_code == 1 and res.stdout == "" and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("Error: no Kubernetes configuration: set KUBECONFIG (or run inside a cluster)")
    assert not (tmp_path / "work").exists()  # refused before anything was written


def test_vllm_manifest_puts_the_hugging_face_runtime_behind_the_sif_transformer():
    cfg = _gpu_cfg()
    cfg = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, vllm_args=["--max_model_len=8192"]))
    m = dp.render_inference_service(cfg, "s3://b/m", "7", runtime="vllm", canary=20)
    dp.validate_manifest(m)
    pred, tr = m["spec"]["predictor"], m["spec"]["transformer"]
    assert pred["canaryTrafficPercent"] == 20 and "containers" not in pred
    assert pred["model"]["modelFormat"] == {"name": "huggingface"} and pred["model"]["storageUri"] == "s3://b/m"
    assert pred["model"]["args"] == ["--model_name=sifthinker", "--backend=vllm",
                                     '--limit-mm-per-prompt={"image": 2}', "--max_model_len=8192"]
    assert pred["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    (c,) = tr["containers"]
    assert c["args"][:5] == ["serve", "--predictor_host", "sifthinker-predictor.default", "--predictor-model", "sifthinker"]
    assert c["args"][-4:] == ["--alias", "sifthinker-local", "--alias", "models:/sifthinker-local/7"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "STORAGE_URI" not in _env({"spec": {"predictor": tr}})
    assert m["metadata"]["annotations"]["sifthinker.io/runtime"] == "vllm"
    with pytest.raises(dp.DeployError, match="storage URI"):
        dp.render_inference_service(cfg, None, "7", runtime="vllm")
    with pytest.raises(dp.DeployError, match="serving.gpu"):
        dp.render_inference_service(_cfg(), "s3://b/m", "7", runtime="vllm")


def test_both_runtimes_validate_against_the_crd(crd_dir):
    for runtime in ("native", "vllm"):
        m = dp.render_inference_service(_gpu_cfg(), "s3://b/m", "7", runtime=runtime, canary=25)
        assert crds.violations(m, crd_dir) == [], runtime


# ---- the CLI ---------------------------------------------------------------------------------------------
def test_cli_dry_run_prints_the_manifest_and_the_validation_line(tmp_path, monkeypatch):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://models/sifthinker/1", "--recipe", LOCAL, "--dry-run"])
    assert res.exit_code == 0, res.output
    m = yaml.safe_load(res.stdout)
    assert m == dp.render_inference_service(_cfg(), "s3://models/sifthinker/1", "unversioned", source="s3://models/sifthinker/1")
    assert res.stderr.splitlines()[-1] == TYPED_LINE
    assert not (tmp_path / "work").exists()
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://models/sifthinker/1", "--recipe", LOCAL])
    assert res.exit_code == 0, res.output
    written = tmp_path / "work" / "deploy" / "sifthinker-inferenceservice.yaml"
    assert yaml.safe_load(written.read_text()) == yaml.safe_load(res.stdout) == m
    assert res.stderr.splitlines()[-2:] == [f"wrote {written}", TYPED_LINE]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--dry-run", "--apply"], {}, "Error: --dry-run writes and applies nothing: drop --apply / --out"),
        (["--recipe", "/no/such.yaml"], {}, "Error: recipe not found: /no/such.yaml"),
        ([], {Env.CRD_DIR: "/no/crds"}, "Error: CRD_DIR=/no/crds is not a folder (point it at the CRD YAMLs, or unset it to skip CRD validation)"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(args, env, message, tmp_path, monkeypatch):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://models/sifthinker/1", "--recipe", LOCAL, *args])
    assert (res.exit_code, res.stderr, res.stdout) == (1, message + "\n", "")


def test_cli_reports_crd_violations_in_one_line(tmp_path, monkeypatch):
    # a CRD of our own, stricter than KServe's, so that the rendered manifest breaks it twice
    strict = {
        "type": "object",
        "required": ["explainer"],
        "properties": {
            "explainer": {"type": "object"},
            "predictor": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                          "properties": {"minReplicas": {"type": "integer", "maximum": 0}}},
        },
    }  # fmt: skip
    monkeypatch.setenv(Env.CRD_DIR, str(_crd_folder(tmp_path, strict)))
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://m/1", "--recipe", LOCAL, "--dry-run"])
    assert (res.exit_code, res.stdout) == (1, "")
    assert res.stderr == (
        "Error: InferenceService/sifthinker: spec: 'explainer' is a required property; "
        "spec.predictor.minReplicas: 1 is greater than the maximum of 0\n"
    )


def test_cli_unreachable_registry_fails_fast_in_one_line(tmp_path):
    port = free_port()  # nothing listens there
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, tracking_uri=f"http://127.0.0.1:{port}"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(cfg.to_yaml())
    t0 = time.monotonic()
    res = CliRunner().invoke(main, ["deploy", "--model", "models:/sifthinker-local@champion", "--recipe", str(recipe), "--dry-run"])
    assert time.monotonic() - t0 < 60  # not MLflow's minutes of retries (a hang guard, not a speed test)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == f"Error: the MLflow tracking server at http://127.0.0.1:{port} is unreachable (Connection refused)\n"


def test_cli_name_and_alias_runtime_canary_and_apply(tmp_path, monkeypatch, kube):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    monkeypatch.delenv(Env.MLFLOW_TRACKING_URI, raising=False)
    cfg = RunConfig.load(LOCAL)
    rv = model_versions.register_model(cfg, _model_dir(tmp_path), {}, {})
    res = CliRunner().invoke(main, ["deploy", "--model", rv.name, "--alias", "challenger", "--recipe", LOCAL, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout)["metadata"]["annotations"]["sifthinker.io/model-version"] == rv.version
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://m/1", "--alias", "champion", "--recipe", LOCAL, "--dry-run"])
    assert (res.exit_code, res.stderr) == (1, "Error: --alias goes with a registered model name, not with the URI 's3://m/1'\n")
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://m/1", "--recipe", LOCAL, "--apply"])
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[-2:] == [
        "created sifthinker in namespace default; ready at http://sifthinker.default.example.com",
        "validated by KServe's typed models and by the cluster (server-side dry run)"]
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://m/2", "--recipe", LOCAL, "--apply", "--canary", "30"])
    assert res.exit_code == 0 and "patched sifthinker" in res.stderr, res.output
    assert kube.objects[("default", "sifthinker")]["spec"]["predictor"]["canaryTrafficPercent"] == 30
    res = CliRunner().invoke(main, ["deploy", "--model", "s3://m/2", "--recipe", LOCAL, "--runtime", "vllm", "--dry-run"])
    assert (res.exit_code, res.stderr) == (1, "Error: the vllm runtime serves on GPUs: set serving.gpu to 1 or more\n")


# ---- deploy() against registries ----------------------------------------------------------------------
def _model_dir(root: Path) -> Path:
    d = root / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    return d


def test_deploy_with_server_and_s3_uses_the_bucket_path(mlflow_server, tmp_path, monkeypatch, kube):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    cfg = RunConfig.load(LOCAL)
    cfg = dataclasses.replace(
        cfg,
        registry=dataclasses.replace(cfg.registry, tracking_uri=mlflow_server.uri, model_name="sif-deploy"),
        serving=dataclasses.replace(cfg.serving, storage_uri_prefix=f"s3://{mlflow_server.s3.bucket}"),
    )
    rv = model_versions.register_model(cfg, _model_dir(tmp_path), {"format_validity": 1.0}, {})
    model_versions.promote(cfg, rv.name, rv.version)
    r = dp.deploy(cfg, f"models:/{rv.name}@champion", apply=True, out_dir=tmp_path / "out", poll_s=0.05)
    m = r.manifest
    storage = _env(m)["STORAGE_URI"]
    # the storage URI KServe will download is exactly where the MLflow server put the files
    bucket_prefix = f"s3://{mlflow_server.s3.bucket}/"
    assert storage.startswith(bucket_prefix)
    assert f"{storage.removeprefix(bucket_prefix)}/config.json" in mlflow_server.s3.keys()
    assert m["metadata"]["annotations"]["sifthinker.io/model-version"] == rv.version
    assert m["metadata"]["annotations"]["sifthinker.io/model-source"] == rv.source_uri
    written = tmp_path / "out" / f"{cfg.serving.name}-inferenceservice.yaml"
    assert r.path == written and yaml.safe_load(written.read_text()) == m and r.applied is True
    assert kube.objects[("default", cfg.serving.name)]["spec"] == m["spec"] and r.url
    # without the prefix the server pulls the pinned version through the tracking server
    cfg2 = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, storage_uri_prefix=None))
    r2 = dp.deploy(cfg2, f"models:/{rv.name}@champion", out_dir=tmp_path / "out2")
    assert _container(r2.manifest)["args"][2] == f"models:/{rv.name}/{rv.version}"
    # ... which a cluster cannot do with a tracking server on 127.0.0.1: written with a warning, not applied
    assert "127.0.0.1" in r2.manifest["metadata"]["annotations"]["sifthinker.io/warning"]
    assert r2.warning == r2.manifest["metadata"]["annotations"]["sifthinker.io/warning"] and r2.applied is False


def test_deploy_from_the_local_store_writes_but_refuses_to_apply(tmp_path, monkeypatch, kube):
    monkeypatch.setenv(Env.WORK_DIR, str(tmp_path / "work"))
    monkeypatch.delenv(Env.MLFLOW_TRACKING_URI, raising=False)
    cfg = RunConfig.load(LOCAL)
    rv = model_versions.register_model(cfg, _model_dir(tmp_path), {}, {})
    r = dp.deploy(cfg, f"models:/{rv.name}@challenger")
    assert r.path == tmp_path / "work" / "deploy" / f"{cfg.serving.name}-inferenceservice.yaml" and r.path.is_file()
    assert "a cluster can reach neither" in r.manifest["metadata"]["annotations"]["sifthinker.io/warning"]
    with pytest.raises(dp.DeployError, match="local"):
        dp.deploy(cfg, f"models:/{rv.name}@challenger", apply=True)
    assert kube.calls == []
    direct = dp.deploy(cfg, "s3://bucket/models/x").manifest
    assert _env(direct)["STORAGE_URI"] == "s3://bucket/models/x"
    assert direct["metadata"]["annotations"]["sifthinker.io/model-version"] == "unversioned"
    # the CLI
    res = CliRunner().invoke(main, ["deploy", "--model", f"models:/{rv.name}@challenger", "--recipe", LOCAL, "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout)["metadata"]["annotations"]["sifthinker.io/model-version"] == rv.version
    assert (tmp_path / "cli" / f"{cfg.serving.name}-inferenceservice.yaml").is_file()
    res = CliRunner().invoke(main, ["deploy", "--model", f"models:/{rv.name}@nope", "--recipe", LOCAL])
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == (f"Error: models:/{rv.name}@nope does not exist in {cfg.tracking_uri} "
                          f"(aliases of {rv.name}: challenger -> version {rv.version})\n")


# ---- the repository alone ------------------------------------------------------------------------------
def _copy_of_the_repository(dest: Path) -> Path:
    """The checkout's files as a user's clone would have them: tracked files plus new files not yet
    committed (not the ignored ones: .venv, work/), read from the working tree so uncommitted edits count."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot list the repository's files")
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # a tracked file someone has just deleted is not in a clone either
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


_LIBRARY_DEPLOY = """
import json, sys
from pathlib import Path
import sifthinker
assert Path(sifthinker.__file__).resolve().is_relative_to(Path.cwd().resolve()), sifthinker.__file__
from sifthinker.config.run_config import RunConfig
from sifthinker.serving.deploy import deploy
print(json.dumps(deploy(RunConfig.load("recipes/local.yaml"), sys.argv[1]).to_dict()))
"""


def test_deploy_works_from_the_repository_alone(tmp_path):
    clone = _copy_of_the_repository(tmp_path / "clone")
    assert [p.name for p in tmp_path.iterdir()] == ["clone"]  # nothing beside it: no ../shared
    env = {k: v for k, v in os.environ.items() if k not in (Env.CRD_DIR, Env.WORK_DIR, Env.KUBECTL, "PYTHONPATH")}
    env["PYTHONPATH"] = f"{clone / 'src'}{os.pathsep}{clone}"
    uri = "s3://models/sifthinker/1"

    lib = subprocess.run([sys.executable, "-c", _LIBRARY_DEPLOY, uri], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert lib.returncode == 0, lib.stderr[-3000:]
    result = json.loads(lib.stdout.strip().splitlines()[-1])
    assert result["validation"] == TYPED_LINE and result["applied"] is False
    assert Path(result["path"]).resolve().is_relative_to(clone.resolve())
    written = yaml.safe_load(Path(result["path"]).read_text())
    assert written == result["manifest"]
    assert (written["kind"], written["metadata"]["name"]) == ("InferenceService", "sifthinker")
    assert _env(written)["STORAGE_URI"] == uri

    cli = subprocess.run(
        [sys.executable, "-m", "sifthinker.cli", "deploy", "--model", uri, "--dry-run", "--recipe", "recipes/local.yaml"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    m = yaml.safe_load(cli.stdout)
    assert (m["kind"], m["metadata"]["name"]) == ("InferenceService", "sifthinker")
    assert _env(m)["STORAGE_URI"] == uri and m["metadata"]["annotations"]["sifthinker.io/storage-uri"] == uri
    assert cli.stderr.splitlines()[-1] == TYPED_LINE
