import json
import math

import pytest

from sifthinker.gate import GateError, check_gate, load_metrics


def test_passes_when_every_threshold_holds_inclusive():
    r = check_gate({"format_validity": 0.8, "accuracy": 0.9, "n": 40}, {"format_validity": 0.8, "accuracy": 0.5})
    assert r.passed and r.failures == [] and r.note is None
    assert r.checked["format_validity"] == {"value": 0.8, "min": 0.8, "passed": True}
    assert set(r.checked) == {"format_validity", "accuracy"}  # only thresholds are checked
    r.raise_if_failed()
    assert "passed" in r.summary()


def test_fails_on_one_metric_with_readable_line():
    r = check_gate({"format_validity": 0.42, "accuracy": 0.9}, {"format_validity": 0.8, "accuracy": 0.5})
    assert not r.passed
    assert r.failures == ["format_validity 0.42 < 0.80"]
    assert r.checked["accuracy"]["passed"] and not r.checked["format_validity"]["passed"]
    with pytest.raises(GateError, match="format_validity 0.42 < 0.80"):
        r.raise_if_failed()


def test_close_values_are_shown_with_enough_digits():
    r = check_gate({"accuracy": 0.7999}, {"accuracy": 0.8})
    assert r.failures == ["accuracy 0.7999 < 0.8000"]


def test_missing_metric_is_a_failure_not_a_pass():
    r = check_gate({"accuracy": 1.0}, {"grounding_acc50": 0.1, "accuracy": 0.5})
    assert not r.passed
    assert r.failures == ["metric 'grounding_acc50' missing from evaluation"]
    assert r.checked["grounding_acc50"] == {"value": None, "min": 0.1, "passed": False}


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.9", None, True])
def test_non_numeric_metric_fails(bad):
    r = check_gate({"accuracy": bad}, {"accuracy": 0.0})
    assert not r.passed and "not a finite number" in r.failures[0]


def test_empty_thresholds_pass_with_a_note():
    r = check_gate({"accuracy": 0.0}, {})
    assert r.passed and r.checked == {} and r.failures == []
    assert r.note and "checked nothing" in r.note
    assert "checked nothing" in r.summary()


def test_invalid_threshold_raises():
    with pytest.raises(ValueError, match="threshold for 'accuracy'"):
        check_gate({"accuracy": 1.0}, {"accuracy": "high"})


def test_load_metrics_roundtrip_and_to_dict(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"format_validity": 0.5}))
    r = check_gate(load_metrics(p), {"format_validity": 0.8})
    assert r.to_dict()["failures"] == ["format_validity 0.50 < 0.80"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError):
        load_metrics(tmp_path / "bad.json")
