"""Reviewing a pipeline run in the MLflow UI, in headless Chromium, as a person does after `make demo`:
the runs list with the pipeline run's nested stages, the pipeline run's page, an evaluation run's report
artifact, and the registered model with its aliases and its logged model's metrics.

The store is a small pipeline run made by the library calls the stages make (no training: the sft and
grpo-sif runs are covered by test_training and test_pipeline_local), served by `mlflow server`.
``SIFTHINKER_SCREENSHOTS=DIR`` saves the four pages as PNGs there (docs/img holds the ones the docs show).

Needs Chromium (`.ci/run` installs it); skips, saying so, where it is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cdp import CHROMIUM, browser

from sifthinker.serving.process import free_port, wait_http

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
PIPELINE_RUN = "pipeline-run-browser"
ML = "workflowType=machine_learning"  # the UI's model-training view (MLflow 3.17 defaults to GenAI)
STAGES = ["build-data", "validate-data", "evaluate:sif-bench", "gate", "register", "deploy"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One pipeline run's tree in a sqlite store, then `mlflow server` on it; yields (url, ids)."""
    from sifthinker.config.run_config import RunConfig
    from sifthinker.data.build import build_dataset
    from sifthinker.data.checks import validate_splits
    from sifthinker.evaluation import FakeOracleGenerator, evaluate
    from sifthinker.names import Stage
    from sifthinker.registry import model_versions
    from sifthinker.registry.gate import run_gate
    from sifthinker.registry.tracking import configure, parent_run, stage_run
    from sifthinker.runtime.stage_logs import log_build, log_deploy, log_gate, log_validation
    from sifthinker.serving.deploy import deploy

    root = tmp_path_factory.mktemp("mlflow-browser")
    cfg = RunConfig(work_dir=str(root / "work"), name="browser")
    cfg.data.num_train = cfg.data.num_eval = 8
    cfg.depth.provider = "fake-gradient"
    cfg.eval.num_render = 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIFTHINKER_PIPELINE_RUN", PIPELINE_RUN)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with stage_run(cfg, Stage.BUILD_DATA):
            log_build(cfg.name, {s: build_dataset(cfg, s, root / s, progress=False) for s in ("train", "eval")})
        with stage_run(cfg, Stage.VALIDATE_DATA):
            log_validation(validate_splits({"train": root / "train", "eval": root / "eval"}))
        res = evaluate(cfg, None, root / "eval", root / "out", generate_fn=FakeOracleGenerator("no_answer", every=4))
        with stage_run(cfg, Stage.GATE):
            log_gate(run_gate(cfg, res.metrics))
        model = root / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        rv = model_versions.register_model(cfg, model, res.metrics, {"data_dir": str(root / "train")})
        model_versions.promote(cfg, rv.name, rv.version)
        with stage_run(cfg, Stage.DEPLOY):
            log_deploy(deploy(cfg, rv.uri, out_dir=root / "deploy"))
        exp_id = configure(cfg)
        ids = {"exp": exp_id, "parent": parent_run(cfg, exp_id, PIPELINE_RUN), "eval": res.run_id, "model": rv.name}
    port = free_port()
    log = root / "mlflow-ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", cfg.tracking_uri,
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=root)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, log)
        yield url, ids
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _shot(page, name: str) -> None:
    if out := os.environ.get("SIFTHINKER_SCREENSHOTS"):
        page.screenshot(Path(out) / f"{name}.png")


def _close_assistant(page) -> None:
    """MLflow 3.17 opens its chat assistant on a first visit; a person closes it once (it stays closed)."""
    page.js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')")


def test_a_pipeline_run_reviewed_in_the_mlflow_ui(store, tmp_path):
    url, ids = store
    with browser(tmp_path / "chromium-profile") as page:
        page.goto(f"{url}/#/experiments")
        page.wait_for("sifthinker")
        _close_assistant(page)

        # the runs list: one pipeline run; expanded, its stages nested under it, no name twice
        page.goto(f"{url}/#/experiments/{ids['exp']}/runs?{ML}")
        page.wait_for(PIPELINE_RUN, "Model training")
        page.js(f"[...document.querySelectorAll('[role=row]')].find(r => r.innerText.includes('{PIPELINE_RUN}'))"
                ".querySelector('button[data-component-id*=runnamecellrenderer]').click()")
        page.wait_for(*STAGES)
        names = page.js("[...document.querySelectorAll('[role=row] [col-id*=\"run_name\" i], [role=row] a')]"
                        ".map(e => e.innerText.trim()).filter(t => t)")
        shown = [n for n in names if n in (*STAGES, PIPELINE_RUN, "sft", "grpo-sif")]
        assert sorted(shown) == sorted([PIPELINE_RUN, *STAGES]), names
        assert "7 matching runs" in page.text()
        _shot(page, "mlflow-runs")

        # the pipeline run's page lists its stages as child runs
        page.goto(f"{url}/#/experiments/{ids['exp']}/runs/{ids['parent']}?{ML}")
        body = page.wait_for("Child runs", *STAGES)
        assert body.count("evaluate:sif-bench") == 1
        _shot(page, "mlflow-pipeline-run")

        # an evaluation run's report, in MLflow's artifact viewer, and its chart and pictures decoded
        page.goto(f"{url}/#/experiments/{ids['exp']}/runs/{ids['eval']}/artifacts/sif-bench/report.html?{ML}")
        page.wait_for("evaluate:sif-bench", "sif-bench/report.html")
        assert page.wait_js("document.querySelectorAll('iframe').length") == 1
        _shot(page, "mlflow-eval-report")
        # (as the viewer does: the served file, written into a page; the server sends it as a download)
        page.js(f"fetch('{url}/get-artifact?path=sif-bench/report.html&run_uuid={ids['eval']}').then(r => r.text())"
                ".then(t => { document.open(); document.write(t); document.close(); })")
        page.wait_for("Scoring mode")
        page.wait_js("[...document.images].every(i => i.complete)")
        imgs = page.js("[...document.images].map(i => [i.className, i.complete && i.naturalWidth > 0])")
        assert [c for c, _ in imgs] == ["chart", "trace", "trace", "trace"] and all(ok for _, ok in imgs), imgs

        # the registered model: its version with both aliases and a few tags, no metric wall
        page.goto("about:blank")  # the written page kept the UI's URL: load the app afresh
        page.goto(f"{url}/#/models/{ids['model']}?{ML}")
        body = page.wait_for("Version 1", "challenger", "champion")
        assert "metric." not in body
        _shot(page, "mlflow-registered-model")

        # its logged model, with the version it became and its metrics as MLflow shows them natively
        page.goto(f"{url}/#/experiments/{ids['exp']}/models?{ML}")
        page.wait_for("Registered models", f"{ids['model']}\nv1", "sif-bench/overall", "0.75")
        _shot(page, "mlflow-logged-models")
