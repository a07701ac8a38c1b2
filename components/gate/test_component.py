import json
from pathlib import Path

import pytest

from components.conftest import io_types
from components.gate.component import gate


def test_spec():
    ins, outs = io_types(gate)
    assert ins == {"recipe": "String", "metrics_parts": "List", "pipeline_run": "String"}
    assert outs == {"Output": "Boolean", "failures": "String", "metrics": "String"}


@pytest.mark.parametrize(("parts", "passed", "failures"), [
    ([{"sif-bench/format_validity": 0.9, "sif-bench/accuracy": 0.1}, {"vstar/overall": 0.2}], True, ""),
    ([{"sif-bench/format_validity": 0.75}], True, ""),  # inclusive minimum
    ([{"sif-bench/format_validity": 0.42}, {"vstar/overall": 1.0}], False, "sif-bench/format_validity 0.42 < 0.75"),
    ([{"vstar/overall": 1.0}], False, "metric 'sif-bench/format_validity' missing from evaluation"),
])
def test_decision_failures_and_merged_metrics(recipe, tmp_path, parts, passed, failures):
    # recipes/local.yaml: gate.thresholds = {sif-bench/format_validity: 0.75}
    out, merged = tmp_path / "failures", tmp_path / "metrics"
    assert gate.python_func(recipe=recipe, metrics_parts=[json.dumps(p) for p in parts], failures=str(out),
                            metrics=str(merged)) is passed
    assert Path(out).read_text() == failures
    assert json.loads(merged.read_text()) == {k: v for p in parts for k, v in p.items()}


def test_conflicting_parts_fail_the_step(recipe, tmp_path):
    parts = [json.dumps({"vstar/overall": 0.2}), json.dumps({"vstar/overall": 0.3})]
    with pytest.raises(ValueError, match="'vstar/overall' reported twice with different values: 0.2 and 0.3"):
        gate.python_func(recipe=recipe, metrics_parts=parts, failures=str(tmp_path / "f"), metrics=str(tmp_path / "m"))
