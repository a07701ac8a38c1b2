"""Step retries as a recipe setting (``platform.retry``): the compiled pipeline's YAML carries each step's
count and the backoff, the defaults stay STEP_POLICY's, bad settings are one ConfigError; and MLflow
artifact uploads (the trained model) ride out a tracking-server error with backoff."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pipelines` lives at the repository root
    sys.path.insert(0, str(ROOT))

from pipelines.platform import STEP_POLICY  # noqa: E402
from pipelines.run import compile_pipeline  # noqa: E402
from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.config.schema import ConfigError  # noqa: E402
from sifthinker.names import STAGES  # noqa: E402


def _retry_policies(path: Path) -> dict[str, dict | None]:
    """Every stage task's retryPolicy in the compiled IR, wherever it sits (root, the loop, the condition)."""
    spec = next(d for d in yaml.safe_load_all(path.read_text()) if d)
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return {s: tasks[s].get("retryPolicy") for s in STAGES}


def test_the_recipe_sets_each_steps_retries_and_the_backoff(tmp_path):
    cfg = RunConfig.load(ROOT / "recipes" / "qwen2.5-vl-7b-8gpu.yaml")
    cfg.platform.retry.steps = {"grpo_sif": 5, "evaluate": 0}  # either spelling of a step
    cfg.platform.retry.backoff_seconds, cfg.platform.retry.backoff_factor = 30, 3.0
    cfg.platform.retry.max_backoff_seconds = 900
    got = _retry_policies(compile_pipeline(cfg, tmp_path / "p.yaml"))
    want = {s: STEP_POLICY[s][0] for s in STAGES} | {"grpo-sif": 5, "evaluate": 0}
    for stage in STAGES:
        if want[stage]:
            assert got[stage] == {"maxRetryCount": want[stage], "backoffDuration": "30s", "backoffFactor": 3.0,
                                  "backoffMaxDuration": "900s"}, stage
        else:
            assert got[stage] is None, stage  # validate-data (a verdict on the data), and evaluate as asked


def test_the_2x8gpu_recipe_retries_preempted_training_three_times():
    from pipelines.platform import step_retries

    cfg = RunConfig.load(ROOT / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml")  # compiled as above (no second compile)
    retries = step_retries(cfg)
    assert retries["sft"] == retries["grpo-sif"] == 3 and retries["build-data"] == 1
    assert cfg.platform.retry.max_backoff_seconds == 1800 and cfg.registry.tracking_outage_s == 900


def test_bad_retry_settings_are_one_config_error(tmp_path):
    cfg = RunConfig.load(ROOT / "recipes" / "qwen2.5-vl-7b-8gpu.yaml")
    cfg.platform.retry.steps = {"trian": 1, "sft": -1, "gate": 99}
    with pytest.raises(ConfigError) as e:
        compile_pipeline(cfg, tmp_path / "p.yaml")
    msg = str(e.value)
    assert msg.startswith("platform.retry.steps: ") and "unknown step 'trian'" in msg
    assert "sft: -1 is not a count from 0 to 20" in msg and "gate: 99" in msg
    with pytest.raises(ValueError, match="backoff_seconds"):
        RunConfig.from_dict({"platform": {"retry": {"backoff_seconds": 0}}})


# ---- MLflow calls at the end of a training step ------------------------------------------------------------
def test_a_tracking_call_is_retried_with_backoff_then_fails_with_one_line(monkeypatch):
    import mlflow

    from sifthinker.registry.tracking_retry import TrackingRetryError, retrying
    from sifthinker.serving.process import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the server is down
    waits: list[float] = []
    with pytest.raises(TrackingRetryError) as e:
        retrying("uploading /m to MLflow", lambda: mlflow.MlflowClient(uri).log_metric("0" * 32, "loss", 1.0),
                 budget_s=20, sleep=waits.append)
    assert waits and waits == [1.0, 2.0, 4.0, 8.0, 16.0][:len(waits)]  # backoff doubling, within the budget
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("uploading /m to MLflow failed ")
    assert "registry.tracking_outage_s = 20 s" in msg and "127.0.0.1" in msg


def test_a_refusal_is_not_retried(mlflow_server):
    import mlflow
    from mlflow.exceptions import MlflowException

    from sifthinker.registry.tracking_retry import retrying

    waits: list[float] = []
    with pytest.raises(MlflowException):  # no such run: the server's 404, the same on every try
        retrying("logging", lambda: mlflow.MlflowClient(mlflow_server.uri).log_metric("f" * 32, "loss", 1.0),
                 budget_s=60, sleep=waits.append)
    assert waits == []
