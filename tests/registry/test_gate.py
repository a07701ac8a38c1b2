import json
import math

import pytest

from sifthinker.registry.gate import GateError, check_gate, load_metrics


def test_passes_when_every_threshold_holds_inclusive():
    r = check_gate({"format_validity": 0.8, "accuracy": 0.9, "n": 40}, {"format_validity": 0.8, "accuracy": 0.5})
    assert r.passed and r.failures == [] and r.note is None
    assert r.checked["format_validity"] == {"value": 0.8, "min": 0.8, "passed": True}
    assert set(r.checked) == {"format_validity", "accuracy"}  # only thresholds are checked
    r.raise_if_failed()
    assert r.summary() == "gate passed (2 threshold(s))"
    assert r.headline() == "passed: format_validity 0.800 >= 0.8, accuracy 0.900 >= 0.5"


def test_fails_on_one_metric_with_readable_line():
    r = check_gate({"format_validity": 0.42, "accuracy": 0.9}, {"format_validity": 0.8, "accuracy": 0.5})
    assert not r.passed
    assert r.failures == ["format_validity 0.42 < 0.80"]
    assert r.checked["accuracy"]["passed"] and not r.checked["format_validity"]["passed"]
    with pytest.raises(GateError) as exc:
        r.raise_if_failed()
    assert str(exc.value) == r.summary() == "gate failed:\n  - format_validity 0.42 < 0.80"
    assert r.headline() == "FAILED: format_validity 0.420 < 0.8, accuracy 0.900 >= 0.5"


def test_close_values_are_shown_with_enough_digits():
    r = check_gate({"accuracy": 0.7999}, {"accuracy": 0.8})
    assert r.failures == ["accuracy 0.7999 < 0.8000"]


def test_missing_metric_is_a_failure_not_a_pass():
    r = check_gate({"accuracy": 1.0}, {"grounding_acc50": 0.1, "accuracy": 0.5})
    assert not r.passed
    assert r.failures == ["metric 'grounding_acc50' missing from evaluation"]
    assert r.checked["grounding_acc50"] == {"value": None, "min": 0.1, "passed": False}
    assert r.headline() == "FAILED: grounding_acc50 missing < 0.1, accuracy 1.000 >= 0.5"


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.9", None, True])
def test_non_numeric_metric_fails(bad):
    r = check_gate({"accuracy": bad}, {"accuracy": 0.0})  # 0.0: any real number would pass
    assert not r.passed and r.failures == [f"metric 'accuracy' is not a finite number: {bad!r}"]
    assert r.checked == {"accuracy": {"value": None, "min": 0.0, "passed": False}}


def test_empty_thresholds_pass_with_a_note():
    r = check_gate({"accuracy": 0.0}, {})
    assert r.passed and r.checked == {} and r.failures == []
    assert r.note == "no thresholds configured: the gate checked nothing"
    assert r.summary() == "gate passed (0 threshold(s)): no thresholds configured: the gate checked nothing"
    assert r.headline() == "passed (no thresholds configured)"


def test_invalid_threshold_raises():
    with pytest.raises(ValueError, match="^threshold for 'accuracy' must be a finite number, got 'high'$"):
        check_gate({"accuracy": 1.0}, {"accuracy": "high"})


def test_load_metrics_roundtrip_and_to_dict(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"format_validity": 0.5}))
    r = check_gate(load_metrics(p), {"format_validity": 0.8})
    assert r.to_dict()["failures"] == ["format_validity 0.50 < 0.80"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="metrics must be a JSON object, got list"):
        load_metrics(tmp_path / "bad.json")


# ---- relative to the current champion -----------------------------------------------------------------
def test_champion_relative_rules_name_every_failing_comparison():
    metrics = {"spatialbench/overall": 0.58, "cv-bench/overall": 0.70, "format_validity": 0.9}
    champion = {"spatialbench/overall": 0.62, "cv-bench/overall": 0.70}
    r = check_gate(metrics, {"format_validity": 0.8},
                   vs_champion={"spatialbench/overall": 0.01, "cv-bench/overall": 0.0}, champion=champion)
    assert not r.passed
    assert r.failures == ["spatialbench/overall 0.58 < 0.61 (champion 0.62 - 0.01)"]
    assert r.checked["cv-bench/overall vs champion"] == {"champion": 0.70, "drop": 0.0, "value": 0.70,
                                                         "min": 0.70, "passed": True}
    assert r.headline() == ("FAILED: spatialbench/overall vs champion 0.580 < 0.61, cv-bench/overall vs champion "
                            "0.700 >= 0.7, format_validity 0.900 >= 0.8")


def test_no_champion_yet_passes_and_says_so():
    r = check_gate({"spatialbench/overall": 0.1}, {}, vs_champion={"spatialbench/overall": 0.01}, champion=None)
    assert r.passed and r.failures == [] and r.note is None
    assert r.notes == ["spatialbench/overall: no champion yet, nothing to compare with"]
    assert r.headline() == "passed: spatialbench/overall: no champion yet, nothing to compare with"
    r = check_gate({"sat/overall": 0.1}, {}, vs_champion={"sat/overall": 0.0}, champion={"other": 1.0})
    assert r.passed and r.notes == ["sat/overall: the champion has no registered value, nothing to compare with"]


def test_a_metric_missing_from_the_evaluation_fails_the_relative_rule():
    r = check_gate({}, {}, vs_champion={"vstar/overall": 0.0}, champion={"vstar/overall": 0.5})
    assert r.failures == ["metric 'vstar/overall' missing from evaluation (needed to compare with the champion)"]


def test_run_gate_reads_the_champion_from_the_registry(tmp_path):
    """The real registry: versions 1 (champion) and 2; the gate compares the candidate with version 1's tags."""
    from mlflow import MlflowClient

    from sifthinker.config.run_config import RunConfig
    from sifthinker.registry import model_versions
    from sifthinker.registry.gate import champion_metrics, run_gate

    cfg = RunConfig(work_dir=str(tmp_path / "work"))
    cfg.registry.model_name = "gate-test"
    cfg.gate.thresholds = {}
    cfg.gate.vs_champion = {"spatialbench/overall": 0.02}
    assert champion_metrics(cfg) is None  # no store at all: no champion, and no store gets created
    assert not (tmp_path / "work").exists()
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    v1 = model_versions.register_model(cfg, model, {"spatialbench/overall": 0.6}, {})
    assert champion_metrics(cfg) is None  # registered but never promoted
    assert run_gate(cfg, {"spatialbench/overall": 0.0}).passed
    model_versions.promote(cfg, "gate-test", v1.version)
    assert champion_metrics(cfg) == {"spatialbench/overall": 0.6}
    r = run_gate(cfg, {"spatialbench/overall": 0.57})
    assert r.failures == ["spatialbench/overall 0.57 < 0.58 (champion 0.6 - 0.02)"]
    assert run_gate(cfg, {"spatialbench/overall": 0.58}).passed
    assert str(MlflowClient(cfg.tracking_uri).get_model_version_by_alias("gate-test", "champion").version) == "1"
