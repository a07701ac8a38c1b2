"""`sifthinker pipeline submit|upload` through kfp's real Client against ``KfpStandIn``, a local **stand-in**
of the Kubeflow Pipelines API (v2beta1) that records every request kfp's client makes and answers the
few it needs (healthz, experiments, runs, pipelines, uploads). Asserted: the uploaded pipeline spec is
the compiled pipeline for the recipe, the run's parameters are typed by the pipeline's definitions,
unknown ``-p`` keys are one-line errors, and credentials come from the environment.
"""

from __future__ import annotations

import email
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from click.testing import CliRunner
from helpers import send_json

from sifthinker.cli import main
from sifthinker.config.run_config import RunConfig
from sifthinker.serving.process import free_port

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RECIPE = REPO / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml"
API = "/apis/v2beta1"


class KfpStandIn:
    """A stand-in for the KFP API server: in-memory experiments, runs, pipelines and versions."""

    def __init__(self):
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: list[dict] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: list[dict] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: dict, code: int = 200) -> None:
                send_json(self, code, body)

            def _record(self) -> dict:
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                req = {"method": self.command, "path": u.path, "query": parse_qs(u.query), "raw": raw,
                       "headers": {k.lower(): v for k, v in self.headers.items()}}
                if raw and "json" in self.headers.get("Content-Type", ""):
                    req["json"] = json.loads(raw)
                elif raw and "multipart" in self.headers.get("Content-Type", ""):
                    msg = email.message_from_bytes(b"Content-Type: " + self.headers["Content-Type"].encode()
                                                   + b"\r\n\r\n" + raw)
                    part = next(p for p in msg.get_payload() if p.get_param("name", header="content-disposition")
                                == "uploadfile")
                    req["file"] = part.get_payload(decode=True).decode()
                standin.requests.append(req)
                return req

            def do_GET(self):
                req = self._record()
                q, path = req["query"], req["path"]
                if path == f"{API}/healthz":
                    return self._send({"multi_user": False})
                if path == f"{API}/experiments":
                    name = _filter_value(q)
                    return self._send({"experiments": [e for e in standin.experiments.values()
                                                       if name in (None, e["display_name"])]})
                if path == f"{API}/pipelines":
                    name = _filter_value(q)
                    found = [p for p in standin.pipelines.values() if name in (None, p["display_name"])]
                    return self._send({"pipelines": found, "total_size": len(found)})
                return self._send({"error": f"stand-in: no route GET {path}"}, 404)

            def do_POST(self):
                req = self._record()
                path = req["path"]
                if path == f"{API}/experiments":
                    exp = {**req["json"], "experiment_id": f"exp-{len(standin.experiments) + 1}"}
                    standin.experiments[exp["experiment_id"]] = exp
                    return self._send(exp)
                if path == f"{API}/runs":
                    run = {**req["json"], "run_id": f"run-{len(standin.runs) + 1}", "state": "PENDING"}
                    standin.runs.append(run)
                    return self._send(run)
                if path == f"{API}/pipelines/upload":
                    pid = f"pipe-{len(standin.pipelines) + 1}"
                    standin.pipelines[pid] = {"pipeline_id": pid, "display_name": req["query"]["name"][0],
                                              "docs": list(yaml.safe_load_all(req["file"]))}
                    return self._send(standin.pipelines[pid])
                if path == f"{API}/pipelines/upload_version":
                    vid = f"ver-{len(standin.versions) + 1}"
                    version = {"pipeline_version_id": vid, "pipeline_id": req["query"]["pipelineid"][0],
                               "display_name": req["query"]["name"][0],
                               "docs": list(yaml.safe_load_all(req["file"]))}
                    standin.versions.append(version)
                    return self._send(version)
                return self._send({"error": f"stand-in: no route POST {path}"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


def _filter_value(query: dict) -> str | None:
    """The display_name a kfp list call filters on (its `filter` is JSON, URL-encoded)."""
    if "filter" not in query:
        return None
    predicates = json.loads(query["filter"][0]).get("predicates", [])
    return next((p.get("string_value") or p.get("stringValue") for p in predicates), None)


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    for var in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIE", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp reads ~/.config/kfp/context.json
    s = KfpStandIn()
    yield s
    s.server.shutdown()


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_submit_uploads_the_compiled_spec_with_typed_parameters(kfp_api, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "id-token-1")
    res = _invoke("pipeline", "submit", "--recipe", str(RECIPE), "--host", kfp_api.url, "--experiment", "sif-exp",
                  "--run-name", "first", "-p", "apply_deployment=yes")
    assert res.exit_code == 0, res.output
    (run,) = kfp_api.runs
    assert res.output.splitlines()[-1] == f"submitted run run-1 (experiment sif-exp): {kfp_api.url}/#/runs/details/run-1"
    spec, platform = run["pipeline_spec"]["pipeline_spec"], run["pipeline_spec"]["platform_spec"]
    assert spec["pipelineInfo"]["name"] == "sifthinker-qwen2-5-vl-7b-2x8gpu"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-sft"]["pvcMount"][0]["mountPath"] == "/workspace"
    containers = spec["deploymentSpec"]["executors"]
    # two nodes: sft trains in a TrainJob, its step only waits (no GPU); evaluate gets eval.resources.gpus
    assert "accelerator" not in containers["exec-sft"]["container"].get("resources", {})
    assert containers["exec-evaluate"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert set(spec["root"]["dag"]["tasks"]) >= {"build-data", "validate-data", "sft", "grpo-sif", "gate"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert RunConfig.from_dict(yaml.safe_load(params["recipe"]["defaultValue"])) == RunConfig.load(RECIPE)
    assert params["recipe"]["description"].startswith("The run's recipe")
    assert run["runtime_config"]["parameters"] == {"apply_deployment": True}  # "yes" as the BOOLEAN it is
    assert run["display_name"] == "first" and run["service_account"] == "sifthinker-pipeline"
    assert run["experiment_id"] == "exp-1" and kfp_api.experiments["exp-1"]["display_name"] == "sif-exp"
    sft = spec["root"]["dag"]["tasks"]["sft"]
    assert sft["retryPolicy"]["maxRetryCount"] == 3 and sft["cachingOptions"]["enableCache"] is True  # platform.retry
    assert {r["headers"].get("authorization") for r in kfp_api.requests} == {"Bearer id-token-1"}
    # a second run reuses the experiment and may replace the recipe from a file
    other = REPO / "recipes" / "qwen2.5-vl-3b-1gpu.yaml"
    res = _invoke("pipeline", "submit", "--recipe", str(RECIPE), "--host", kfp_api.url, "--experiment", "sif-exp",
                  "-p", f"recipe=@{other}", "--service-account", "team-runner")
    assert res.exit_code == 0, res.output
    second = kfp_api.runs[1]
    assert second["experiment_id"] == "exp-1" and len(kfp_api.experiments) == 1
    assert second["runtime_config"]["parameters"] == {"apply_deployment": False, "recipe": other.read_text()}
    assert second["service_account"] == "team-runner"


@pytest.mark.parametrize("param, message", [
    ("epochs=3", "the pipeline has no parameter 'epochs' (it takes: apply_deployment, recipe)"),
    ("apply_deployment=maybe", "apply_deployment takes true or false"),
    ("apply_deployment", "expected key=value"),
    ("recipe=@/no/such.yaml", "no such file"),
])
def test_bad_parameters_are_one_line_errors_and_submit_nothing(kfp_api, param, message):
    res = _invoke("pipeline", "submit", "--recipe", str(RECIPE), "--host", kfp_api.url, "-p", param)
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("Error: ") and message in res.stderr, res.stderr
    assert kfp_api.runs == []


def test_upload_creates_the_pipeline_then_adds_versions(kfp_api, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_COOKIE", "authservice_session=abc")
    res = _invoke("pipeline", "upload", "--recipe", str(RECIPE), "--host", kfp_api.url, "--version", "v1")
    assert res.exit_code == 0, res.output
    (pipe,) = kfp_api.pipelines.values()
    assert pipe["display_name"] == "sifthinker-qwen2-5-vl-7b-2x8gpu"
    assert pipe["docs"][0]["pipelineInfo"]["name"] == pipe["display_name"]
    assert [v["display_name"] for v in kfp_api.versions] == ["v1"]
    assert f"uploaded pipeline {pipe['display_name']} version v1 (ver-1)" in res.output
    res = _invoke("pipeline", "upload", "--recipe", str(RECIPE), "--host", kfp_api.url, "--version", "v2")
    assert res.exit_code == 0, res.output
    assert len(kfp_api.pipelines) == 1 and [v["display_name"] for v in kfp_api.versions] == ["v1", "v2"]
    assert kfp_api.versions[1]["pipeline_id"] == pipe["pipeline_id"]
    spec, platform = kfp_api.versions[1]["docs"]  # the compiled file: the IR, then the Kubernetes settings
    assert "sft" in spec["root"]["dag"]["tasks"] and "kubernetes" in platform["platforms"]
    assert all("authservice_session=abc" in r["headers"].get("cookie", "") for r in kfp_api.requests)


def test_an_unreachable_server_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    res = _invoke("pipeline", "submit", "--recipe", str(RECIPE), "--host", f"http://127.0.0.1:{free_port()}")
    assert res.exit_code == 1 and res.stderr.startswith("Error: could not submit to http://127.0.0.1:")
    assert res.stderr.count("\n") == 1
