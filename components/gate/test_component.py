import json
from pathlib import Path

import pytest

from components.conftest import io_types
from components.gate.component import gate


def test_spec():
    ins, outs = io_types(gate)
    assert ins == {"recipe": "String", "metrics_json": "String"}
    assert outs == {"Output": "Boolean", "failures": "String"}


@pytest.mark.parametrize(("metrics", "passed", "failures"), [
    ({"format_validity": 0.9, "accuracy": 0.1}, True, ""),
    ({"format_validity": 0.8}, True, ""),  # inclusive minimum
    ({"format_validity": 0.42}, False, "format_validity 0.42 < 0.80"),
    ({"accuracy": 1.0}, False, "metric 'format_validity' missing from evaluation"),
])
def test_decision_and_failures(recipe, tmp_path, metrics, passed, failures):
    # recipes/local.yaml: gate.thresholds = {format_validity: 0.8}
    out = tmp_path / "failures"
    assert gate.python_func(recipe=recipe, metrics_json=json.dumps(metrics), failures=str(out)) is passed
    assert Path(out).read_text() == failures
