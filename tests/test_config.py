from pathlib import Path

import pytest

from sifthinker.config import ConfigError, RunConfig

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_round_trips(path):
    cfg = RunConfig.load(path)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"recipe\.sft: unknown key\(s\) \['epoch'\]"):
        RunConfig.from_dict({"sft": {"epoch": 3}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"recipe\.data\.num_train: expected an integer"):
        RunConfig.from_dict({"data": {"num_train": "many"}})
    with pytest.raises(ConfigError, match=r"recipe\.platform\.gpu\.tolerations\[0\]"):
        RunConfig.from_dict({"platform": {"gpu": {"tolerations": [{"operator": "Exists"}]}}})


def test_scientific_notation_from_yaml_is_a_float():
    assert RunConfig.from_dict({"sft": {"learning_rate": "1e-4"}}).sft.learning_rate == 1e-4


def test_optional_nested_section():
    cfg = RunConfig.from_dict({"sft": {"lora": {"r": 8, "alpha": 16}}})
    assert cfg.sft.lora is not None and cfg.sft.lora.r == 8
    assert RunConfig().sft.lora is None


def test_paths_resolve_against_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig()
    assert cfg.path("models") == tmp_path / "models"
    assert cfg.path("/abs/x") == Path("/abs/x")
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        RunConfig.load(tmp_path / "nope.yaml")
