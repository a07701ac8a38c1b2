import json
from pathlib import Path

from kfp.dsl import HTML, Dataset, Metrics, Model

from components.conftest import artifact, io_types, stage_events
from components.evaluate.component import evaluate
from sifthinker.evaluation.runner import EvalResult


def test_spec():
    ins, outs = io_types(evaluate)
    assert ins == {"recipe": "String", "pipeline_run": "String", "benchmark": "String",
                   "model": "system.Model@0.0.1", "eval_data": "system.Dataset@0.0.1"}
    assert outs == {"metrics": "system.Metrics@0.0.1", "report": "system.HTML@0.0.1",
                    "predictions": "system.Dataset@0.0.1", "Output": "String"}


def test_logs_metrics_and_copies_the_report(recipe, work_env, monkeypatch, tmp_path):
    def fake_evaluate(cfg, model_dir, eval_dir, out_dir, only):  # a stand-in for evaluation: the wiring is under test
        assert (model_dir, eval_dir, only) == (tmp_path / "model", tmp_path / "eval", "sif-bench")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.html").write_text("<html><body>report</body></html>")
        (out_dir / "predictions.jsonl").write_text("{}\n")
        return EvalResult(metrics={"format_validity": 0.75, "accuracy": 0.5, "n": 6, "per_category": {"depth": 1.0}},
                          predictions_path=out_dir / "predictions.jsonl", renders=[out_dir / "a.png"],
                          report_html=out_dir / "report.html")

    monkeypatch.setattr("sifthinker.evaluation.evaluate", fake_evaluate)
    metrics = artifact(Metrics, tmp_path / "metrics")
    report = artifact(HTML, tmp_path / "report.html")
    predictions = artifact(Dataset, tmp_path / "predictions")
    out = evaluate.python_func(recipe=recipe, pipeline_run="job-1", benchmark="sif-bench",
                               model=artifact(Model, tmp_path / "model"),
                               eval_data=artifact(Dataset, tmp_path / "eval"), metrics=metrics, report=report,
                               predictions=predictions)

    assert json.loads(out) == {"format_validity": 0.75, "accuracy": 0.5, "n": 6, "per_category": {"depth": 1.0}}
    assert metrics.metadata == {"format_validity": 0.75, "accuracy": 0.5, "n": 6}  # numbers only
    assert Path(report.path).read_text() == "<html><body>report</body></html>"
    assert (tmp_path / "predictions" / "predictions.jsonl").is_file()
    assert predictions.metadata["renders"] == 1 and predictions.metadata["benchmark"] == "sif-bench"
    assert stage_events(work_env)[-1] == ("done", "evaluate:sif-bench", "validity 0.750, accuracy 0.500 (6 items)")
