"""Deploy: InferenceService rendering, CRD validation (sifthinker.k8s), kustomize overlays, deploy()."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sifthinker import k8s, registry
from sifthinker.cli import main
from sifthinker.config import GPUConfig, RunConfig, Toleration
from sifthinker.serving import deploy as dp

REPO = Path(__file__).resolve().parents[1]
KINDS = {"InferenceService", "ServingRuntime"}


def _cfg(**serving) -> RunConfig:
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    return dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, **serving))


def _container(manifest: dict) -> dict:
    (c,) = manifest["spec"]["predictor"]["containers"]
    return c


def _env(manifest: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(manifest)["env"]}


def test_rendered_cpu_manifest_validates_and_pins_the_version():
    cfg = _cfg()
    rv = registry.RegisteredVersion("sifthinker-local", "3", "mlflow-artifacts:/1/abc/artifacts/model", "abc")
    m = dp.render_inference_service(cfg, "s3://models/1/abc/artifacts/model", rv, source=rv.source_uri)
    assert k8s.validate(m) is m
    assert m["apiVersion"] == "serving.kserve.io/v1beta1" and m["kind"] == "InferenceService"
    assert m["metadata"]["name"] == cfg.serving.name and m["metadata"]["namespace"] == cfg.serving.namespace
    ann = m["metadata"]["annotations"]
    assert ann["sifthinker.io/model-name"] == "sifthinker-local" and ann["sifthinker.io/model-version"] == "3"
    assert ann["sifthinker.io/model-uri"] == "models:/sifthinker-local/3"
    c = _container(m)
    assert c["name"] == "kserve-container" and c["image"] == cfg.serving.runtime_image
    assert c["command"] == ["sifthinker"] and c["args"][:3] == ["serve", "--model", "/mnt/models"]
    assert c["args"][c["args"].index("--port") + 1] == str(cfg.serving.port)
    assert c["ports"][0]["containerPort"] == cfg.serving.port
    env = _env(m)
    assert env["STORAGE_URI"] == "s3://models/1/abc/artifacts/model" and "MLFLOW_TRACKING_URI" not in env
    assert RunConfig.from_dict(yaml.safe_load(env["SIFTHINKER_RECIPE_YAML"])) == cfg
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "tolerations" not in m["spec"]["predictor"]


def test_rendered_gpu_manifest_validates():
    cfg = _cfg(gpu=2, service_account="sifthinker-serve")
    cfg = dataclasses.replace(
        cfg,
        platform=dataclasses.replace(
            cfg.platform,
            gpu=GPUConfig(
                count=8, node_selector={"nvidia.com/gpu.product": "H100"}, shm_size="16Gi", memory="64Gi",
                tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists")],
            ),
        ),
    )  # fmt: skip
    m = k8s.validate(dp.render_inference_service(cfg, "s3://b/m", "7"))
    p = m["spec"]["predictor"]
    c = _container(m)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2" and c["resources"]["limits"]["memory"] == "64Gi"
    assert p["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert p["nodeSelector"] == {"nvidia.com/gpu.product": "H100"} and p["serviceAccountName"] == "sifthinker-serve"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert m["metadata"]["annotations"]["sifthinker.io/model-name"] == cfg.registry.model_name


def test_rendered_registry_pull_manifest_validates():
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, tracking_uri="http://mlflow.mlflow:5000"))
    m = k8s.validate(dp.render_inference_service(cfg, None, "4"))
    c = _container(m)
    assert c["args"][:3] == ["serve", "--model", f"models:/{cfg.registry.model_name}/4"]
    assert _env(m)["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow:5000"
    assert {"name": "model-cache", "mountPath": dp.MODEL_CACHE} in c["volumeMounts"]


def test_broken_manifest_lists_every_violation():
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
    with pytest.raises(k8s.ValidationError) as ei:
        k8s.validate(bad)
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
    assert k8s.violations(m) == []


def test_unknown_kinds_and_crd_dir_setting(tmp_path, monkeypatch):
    with pytest.raises(k8s.UnknownKindError, match="no CRD for Deployment apps/v1"):
        k8s.validate({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}})
    assert k8s.violations({"kind": "InferenceService"}) == ["<root>: apiVersion and kind are required"]
    assert ("serving.kserve.io/v1beta1", "InferenceService") in k8s.known_kinds()
    assert k8s.crd_dir() == (REPO.parent / "shared" / "crds").resolve()
    monkeypatch.setenv("CRD_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="CRD_DIR="):
        k8s.crd_dir()
    monkeypatch.setenv("CRD_DIR", str(tmp_path))
    assert k8s.crd_dir() == tmp_path.resolve() and k8s.known_kinds() == []
    with pytest.raises(k8s.UnknownKindError, match="known: none"):
        k8s.validate(dp.render_inference_service(_cfg(), "s3://b/m", "1"))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", ["local", "gpu"])
def test_kustomize_overlays_render_and_validate(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    docs = k8s.load_documents(out)
    assert k8s.validate_documents(docs, kinds=KINDS) == 2
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
        assert "nvidia.com/gpu" in _container_of(by_kind["ServingRuntime"])["resources"]["limits"]
    else:
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
        assert "nvidia.com/gpu" not in c["resources"]["limits"]


def _container_of(runtime: dict) -> dict:
    (c,) = runtime["spec"]["containers"]
    return c


def test_a_broken_overlay_fails_validation():
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "manifests" / "overlays" / "local")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    docs = k8s.load_documents(out)
    for d in docs:
        if d["kind"] == "ServingRuntime":
            d["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    with pytest.raises(k8s.ValidationError, match=r"ServingRuntime/sifthinker: spec.supportedModelFormats\[0\].autoSelect"):
        k8s.validate_documents(docs, kinds=KINDS)


# ---- deploy() against registries ----------------------------------------------------------------------
def _model_dir(root: Path) -> Path:
    d = root / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    return d


def _fake_kubectl(tmp_path: Path, rc: int = 0) -> Path:
    script = tmp_path / "kubectl"
    log = tmp_path / "kubectl.args"
    script.write_text(
        f"#!/bin/sh\necho \"$@\" > {log}\n"
        + ("echo 'inferenceservice.serving.kserve.io/sifthinker created'\n" if rc == 0 else "echo 'forbidden: no' >&2\n")
        + f"exit {rc}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_deploy_with_server_and_s3_uses_the_bucket_path(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg = dataclasses.replace(
        cfg,
        registry=dataclasses.replace(cfg.registry, tracking_uri=mlflow_server.uri, model_name="sif-deploy"),
        serving=dataclasses.replace(cfg.serving, storage_uri_prefix=f"s3://{mlflow_server.s3.bucket}"),
    )
    rv = registry.register_model(cfg, _model_dir(tmp_path), {"format_validity": 1.0}, {})
    registry.promote(cfg, rv.name, rv.version)
    monkeypatch.setenv("KUBECTL", str(_fake_kubectl(tmp_path)))
    m = dp.deploy(cfg, f"models:/{rv.name}@champion", apply=True, out_dir=tmp_path / "out")
    storage = _env(m)["STORAGE_URI"]
    # the storage URI KServe will download is exactly where the MLflow server put the files
    bucket_prefix = f"s3://{mlflow_server.s3.bucket}/"
    assert storage.startswith(bucket_prefix)
    assert f"{storage.removeprefix(bucket_prefix)}/config.json" in mlflow_server.s3.keys()
    assert m["metadata"]["annotations"]["sifthinker.io/model-version"] == rv.version
    assert m["metadata"]["annotations"]["sifthinker.io/model-source"] == rv.source_uri
    written = tmp_path / "out" / f"{cfg.serving.name}-inferenceservice.yaml"
    assert yaml.safe_load(written.read_text()) == m
    assert (tmp_path / "kubectl.args").read_text().split() == ["apply", "-f", str(written)]
    # kubectl failing is a DeployError carrying its message
    monkeypatch.setenv("KUBECTL", str(_fake_kubectl(tmp_path, rc=1)))
    with pytest.raises(dp.DeployError, match="forbidden: no"):
        dp.deploy(cfg, f"models:/{rv.name}/{rv.version}", apply=True, out_dir=tmp_path / "out")
    # without the prefix the server pulls the pinned version through the tracking server
    cfg2 = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, storage_uri_prefix=None))
    m2 = dp.deploy(cfg2, f"models:/{rv.name}@champion", out_dir=tmp_path / "out2")
    assert _container(m2)["args"][2] == f"models:/{rv.name}/{rv.version}"
    # ... which a cluster cannot do with a tracking server on 127.0.0.1: written with a warning, not applied
    assert "127.0.0.1" in m2["metadata"]["annotations"]["sifthinker.io/warning"]


def test_deploy_from_the_local_store_writes_but_refuses_to_apply(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    rv = registry.register_model(cfg, _model_dir(tmp_path), {}, {})
    m = dp.deploy(cfg, f"models:/{rv.name}@challenger")
    assert (tmp_path / "work" / "deploy" / f"{cfg.serving.name}-inferenceservice.yaml").is_file()
    assert "a cluster can reach neither" in m["metadata"]["annotations"]["sifthinker.io/warning"]
    monkeypatch.setenv("KUBECTL", str(_fake_kubectl(tmp_path)))
    with pytest.raises(dp.DeployError, match="local"):
        dp.deploy(cfg, f"models:/{rv.name}@challenger", apply=True)
    assert not (tmp_path / "kubectl.args").exists()
    with pytest.raises(dp.DeployError, match="cannot deploy"):
        dp.deploy(cfg, "/some/folder")
    direct = dp.deploy(cfg, "s3://bucket/models/x")
    assert _env(direct)["STORAGE_URI"] == "s3://bucket/models/x"
    assert direct["metadata"]["annotations"]["sifthinker.io/model-version"] == "unversioned"
    # the CLI
    res = CliRunner().invoke(main, ["deploy", "--model", f"models:/{rv.name}@challenger", "--recipe", str(REPO / "recipes" / "local.yaml"), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout)["kind"] == "InferenceService"
    res = CliRunner().invoke(main, ["deploy", "--model", f"models:/{rv.name}@nope", "--recipe", str(REPO / "recipes" / "local.yaml")])
    assert res.exit_code == 1 and "does not exist" in res.output
