"""Fixtures for the component tests: a small recipe, artifacts in a temp folder, fake library modules.

A component's function body runs here directly (``component.python_func``), with real KFP artifact objects
whose URIs are local folders, exactly as kfp's local runner passes them.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env
from sifthinker.runtime.stages import recipe_parameter

ROOT = Path(__file__).resolve().parents[1]


def small_config(**data) -> RunConfig:
    cfg = RunConfig.load(ROOT / "recipes" / "local.yaml")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_train=12, num_eval=6, **data))


def artifact(cls, path: Path, **metadata):
    """A KFP artifact whose URI is a local path (as the local runner makes them)."""
    a = cls(uri=str(path))
    a.metadata.update(metadata)
    return a


@pytest.fixture
def work_env(tmp_path, monkeypatch) -> Path:
    """A private work directory and no pipeline run id (restored after the test)."""
    work = tmp_path / "work"
    monkeypatch.setenv(Env.WORK_DIR, str(work))
    monkeypatch.setenv(Env.PIPELINE_RUN, "")
    monkeypatch.setenv(Env.EVENTS, str(tmp_path / "events.jsonl"))
    return work


def stage_events(work: Path) -> list[tuple[str, str, str]]:
    """(event, stage, summary or error) of every stage event written during a test using ``work_env``."""
    path = work.parent / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [(r["event"], r["stage"], r.get("summary", r.get("error", ""))) for r in rows]


@pytest.fixture
def recipe(work_env) -> str:
    return recipe_parameter(small_config())


@pytest.fixture(scope="session")
def built_data(tmp_path_factory):
    """Train and eval datasets built once by the real build_data body (12 + 6 synthetic records)."""
    from kfp.dsl import Dataset

    from components.build_data.component import build_data

    root = tmp_path_factory.mktemp("built")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIFTHINKER_WORK_DIR", str(root / "work"))
    try:
        train, evl = artifact(Dataset, root / "train_data"), artifact(Dataset, root / "eval_data")
        build_data.python_func(recipe=recipe_parameter(small_config()), train_data=train, eval_data=evl)
    finally:
        mp.undo()
    return train, evl


def io_types(component) -> tuple[dict[str, str], dict[str, str]]:
    """Input and output names of a component with their KFP types (e.g. ``system.Dataset@0.0.1``, ``String``)."""
    spec = component.component_spec
    ins = {k: str(v.type) for k, v in (spec.inputs or {}).items()}
    outs = {k: str(v.type) for k, v in (spec.outputs or {}).items()}
    return ins, outs
