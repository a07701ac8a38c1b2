"""The whole pipeline, run locally by kfp's SubprocessRunner, with a gate that cannot pass.

A small recipe (a dozen records, one short epoch, a couple of GRPO steps) and the threshold
accuracy >= 1.01, run as a user runs it: `sifthinker run --recipe ...` in a subprocess. Every step up
to the gate runs as its own subprocess, the gate fails, the run still ends cleanly (exit 1, saying
why), register and deploy never run and the MLflow registry stays empty. All stage runs in MLflow carry
the one pipeline run id. The console shows one line per stage; the steps' output is in the log file.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pipelines` and `components` live at the repository root
    sys.path.insert(0, str(ROOT))

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402

from pipelines.run import _collect  # noqa: E402
from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.data.checks import build_suite  # noqa: E402
from sifthinker.names import STAGES  # noqa: E402

pytestmark = pytest.mark.slow


def small_recipe() -> RunConfig:
    cfg = RunConfig.load(ROOT / "recipes" / "local.yaml")
    r = dataclasses.replace
    return r(
        cfg,
        name="local-gate-test",
        data=r(cfg.data, num_train=12, num_eval=6),
        model=r(cfg.model, tiny=r(cfg.model.tiny, pretrain_steps=5)),  # the path, not the skill
        sft=r(cfg.sft, epochs=1.0, per_device_batch_size=4, logging_steps=1),
        grpo=r(cfg.grpo, num_items=4, num_generations=2, per_device_batch_size=2, max_completion_length=24,
               max_steps=2),
        eval=r(cfg.eval, max_new_tokens=24, batch_size=6, num_render=1),
        gate=r(cfg.gate, thresholds={"accuracy": 1.01}),
        registry=r(cfg.registry, model_name="sifthinker-gate-test"),
    )


@pytest.fixture(scope="module")
def failed_gate_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local-run")
    cfg = small_recipe()
    recipe = tmp / "small.yaml"
    recipe.write_text(cfg.to_yaml())
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SIFTHINKER_PIPELINE_RUN")}
    env["SIFTHINKER_WORK_DIR"] = str(tmp / "work")
    proc = subprocess.run([sys.executable, "-m", "sifthinker.cli", "run", "--recipe", str(recipe),
                           "--pipeline-root", str(tmp / "kfp")], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=1500)
    (run_dir,) = [d for d in (tmp / "kfp").iterdir() if d.is_dir()]
    run_id = next(line.split()[2].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("pipeline run "))
    cfg = dataclasses.replace(cfg, work_dir=str(tmp / "work"))
    yield cfg, _collect(run_id, tmp / "kfp", run_dir), proc


def test_the_console_shows_one_line_per_stage_and_the_log_has_the_rest(failed_gate_run):
    cfg, res, proc = failed_gate_run
    assert proc.returncode == 1 and proc.stderr == ""  # a failed gate: exit 1, nothing else on stderr
    lines = proc.stdout.splitlines()
    log_path = Path(lines[0].rsplit("full log: ", 1)[1])
    stage_lines = [m[1] for line in lines if (m := re.match(r"^  (\S+) +\d+\.\ds  ", line))]
    assert stage_lines[:4] == list(STAGES[:4]) and stage_lines[-1] == "gate"  # in order, once each
    assert sorted(stage_lines[4:-1]) == ["evaluate:sif-bench", "evaluate:vstar"]  # in parallel: either order
    gate_line = next(line for line in lines if line.split() and line.split()[0] == "gate")
    assert "FAILED: accuracy" in gate_line and "< 1.01" in gate_line
    assert len(lines) <= 20, proc.stdout  # about a line per stage plus the summary, nothing from the steps
    log = log_path.read_text()
    assert "executor_input" in log or "Executing task" in log  # KFP's own output went to the log file
    assert "Executing task" not in proc.stdout and "[sft] step" not in proc.stdout


def test_gate_fails_cleanly_and_nothing_after_it_runs(failed_gate_run):
    _, res, _ = failed_gate_run
    # evaluate ran once per benchmark of the recipe: the synthetic held-out split and the V* fixture
    assert res.ran == ["build-data", "validate-data", "sft", "grpo-sif", "evaluate:sif-bench", "evaluate:vstar", "gate"]
    assert res.gate_passed is False
    assert any(f.startswith("accuracy ") and f.endswith("< 1.01") for f in res.gate_failures), res.gate_failures
    assert res.registered is None and res.deployment is None
    assert "not run: register, deploy" in res.summary()


def test_artifacts_of_every_step(failed_gate_run, tmp_path):
    cfg, res, _ = failed_gate_run
    train = res.artifact("build-data", "train_data")
    assert len(json.loads((train / "records.json").read_text())) == 12
    assert res.tasks["build-data"].artifacts["eval_data"]["metadata"]["num_records"] == 6
    n = len(build_suite().expectations)  # the suite grows with the sources; every one is evaluated
    assert res.artifact("validate-data", "report").read_text().splitlines()[2:] == [
        f"- **train**: all {n} expectations met", f"- **eval**: all {n} expectations met"]
    assert any(res.artifact("sft", "model").iterdir()) and any(res.artifact("grpo-sif", "model").iterdir())
    assert res.tasks["grpo-sif"].artifacts["model"]["metadata"]["sft_model"] == str(res.artifact("sft", "model"))
    ev = res.tasks["evaluate:sif-bench"]
    assert "<html" in res.artifact("evaluate:sif-bench", "report").read_text().lower()
    assert set(ev.artifacts["metrics"]["metadata"]) >= {"format_validity", "accuracy"}
    # the metrics the gate read are what scoring the written predictions gives (`eval score`), and the
    # gate quotes them
    from sifthinker.evaluation.run import score_predictions_file

    preds = res.artifact("evaluate:sif-bench", "predictions") / "sif-bench" / "predictions.jsonl"
    assert len(preds.read_text().splitlines()) == 6 and res.metrics["n"] == 6
    rescored = score_predictions_file(cfg, "sif-bench", res.artifact("build-data", "eval_data"), preds,
                                      tmp_path / "rescored")
    for key in ("accuracy", "format_validity", "grounding_acc50", "n"):
        assert res.metrics[key] == res.metrics[f"sif-bench/{key}"] == rescored.metrics[key], key
    assert res.metrics["vstar/n"] == 5  # the V* fixture's five items, scored in their own step
    assert f"accuracy {res.metrics['accuracy']:.2f} < 1.01" in res.gate_failures


def test_mlflow_has_one_pipeline_run_and_no_model_versions(failed_gate_run):
    from mlflow import MlflowClient

    cfg, res, _ = failed_gate_run
    client = MlflowClient(cfg.tracking_uri)
    assert client.search_model_versions(f"name='{cfg.registry.model_name}'") == []
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's model-training view
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags.get("sifthinker.pipeline_run") for r in runs} == {res.pipeline_run_id}
    # one parent named after the pipeline run, one nested run per stage that ran (each stage in its own
    # process found the same parent), no name twice
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == res.pipeline_run_id and parent.info.status == "FINISHED"
    nested = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert nested == sorted(["build-data", "validate-data", "sft", "grpo-sif", "evaluate:sif-bench", "evaluate:vstar",
                             "gate"])
    by_name = {r.info.run_name: r for r in runs}
    assert by_name["gate"].data.metrics["passed"] == 0.0  # the decision, and the comparisons as a table
    assert "gate.json" in {a.path for a in client.list_artifacts(by_name["gate"].info.run_id)}
    assert by_name["build-data"].data.metrics["train/records"] == 12
    assert {d.dataset.name for d in by_name["build-data"].inputs.dataset_inputs} == {
        "local-gate-test-train", "local-gate-test-eval"}
    assert by_name["validate-data"].data.metrics["eval/expectations_failed"] == 0
    ev = by_name["evaluate:sif-bench"]
    assert ev.data.metrics["sif-bench/n"] == 6 and "n" not in ev.data.metrics  # each metric once
