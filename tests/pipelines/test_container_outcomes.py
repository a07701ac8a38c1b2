"""How a container run judges its steps (pipelines/run.py), without a container engine."""

import pytest


def test_a_step_without_its_executor_record_fails_the_run(tmp_path):
    """kfp's DockerRunner assumes success when the container is gone before it reads the exit code: the
    run is judged from each step's own record instead. (A stand-in run folder: the engine cannot be made
    to lose a container on cue.)"""
    from pipelines.run import StepFailed, check_outcomes

    run = tmp_path / "run"
    for step in ("build-data", "for-loop-1/evaluate"):
        (run / step).mkdir(parents=True)
        (run / step / "executor_output.json").write_text("{}")
    (run / "validate-data").mkdir()
    with pytest.raises(StepFailed, match="validate-data"):
        check_outcomes(run)
    (run / "validate-data" / "executor_output.json").write_text("{}")
    assert sorted(check_outcomes(run)) == ["build-data", "evaluate", "validate-data"]
