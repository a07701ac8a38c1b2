"""Step retries as a recipe setting (``platform.retry``): the compiled pipeline's YAML carries each step's
count and the backoff, the defaults stay STEP_POLICY's, bad settings are one ConfigError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pipelines` lives at the repository root
    sys.path.insert(0, str(ROOT))

from pipelines.platform import STEP_POLICY  # noqa: E402
from pipelines.run import compile_pipeline  # noqa: E402
from sifthinker.config import ConfigError, RunConfig  # noqa: E402
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


def test_the_2x8gpu_recipe_retries_preempted_training_three_times(tmp_path):
    cfg = RunConfig.load(ROOT / "recipes" / "qwen2.5-vl-7b-2x8gpu.yaml")
    got = _retry_policies(compile_pipeline(cfg, tmp_path / "p.yaml"))
    assert got["sft"]["maxRetryCount"] == got["grpo-sif"]["maxRetryCount"] == 3
    assert got["grpo-sif"]["backoffMaxDuration"] == "1800s" and got["build-data"]["maxRetryCount"] == 1


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

