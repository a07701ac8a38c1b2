"""`sifthinker model promote` / `model rollback`: aliases move in one write after their history, idempotently;
rollback restores the previous champion recorded on the promoted version."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sifthinker.cli import main
from sifthinker.config.run_config import RunConfig
from sifthinker.registry import model_versions
from sifthinker.registry.rollback import rollback


@pytest.fixture
def store(tmp_path, monkeypatch) -> tuple[RunConfig, list[str]]:
    """A local store with versions 1-3 of one model (tiny stand-in folders: the registry only copies files)."""
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig()
    versions = []
    for i in range(3):
        d = tmp_path / f"m{i}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"i": i}))
        versions.append(model_versions.register_model(cfg, d, {"format_validity": i / 10}, {}).version)
    return cfg, versions


def _cli(cfg, *args):
    return CliRunner().invoke(main, ["model", *args, "--tracking-uri", cfg.tracking_uri])


def _champion(cfg, name="sifthinker"):
    return model_versions.describe(name, cfg)["aliases"].get("champion")


def test_promote_then_rollback_restores_the_previous_champion_idempotently(store):
    cfg, (v1, v2, v3) = store
    assert _cli(cfg, "promote", "sifthinker", "--version", v1).stdout == f"sifthinker@champion: version none -> {v1}\n"
    assert _cli(cfg, "promote", "sifthinker", "--version", v2).exit_code == 0
    # promoting again is a no-op, not a second history entry
    assert model_versions.promote(cfg, "sifthinker", v2)["previous"] == v2
    d = model_versions.describe("sifthinker", cfg)
    assert d["versions"][1]["tags"]["previous.champion"] == v1 and d["tags"]["last_promotion.champion"] == f"{v1} -> {v2}"

    res = _cli(cfg, "rollback", "sifthinker")
    assert (res.exit_code, res.stdout) == (0, f"sifthinker@champion: version {v2} -> {v1} (rolled back)\n")
    assert _champion(cfg) == v1
    # again: nothing moves (not back to v2, not further)
    res = _cli(cfg, "rollback", "sifthinker")
    assert res.stdout == f"sifthinker@champion: already rolled back from version {v2} to {v1}; nothing to do\n"
    assert _champion(cfg) == v1 and rollback(cfg, "sifthinker")["changed"] is False

    # a new promotion ends the rollback; the next rollback undoes that promotion
    model_versions.promote(cfg, "sifthinker", v3)
    assert "last_rollback.champion" not in model_versions.describe("sifthinker", cfg)["tags"]
    assert rollback(cfg, "sifthinker") == {"name": "sifthinker", "alias": "champion", "from": v3, "to": v1,
                                           "changed": True}
    assert _champion(cfg) == v1


def test_rollback_refuses_what_it_cannot_do_in_one_line(store):
    cfg, (v1, _, _) = store
    res = _cli(cfg, "rollback", "sifthinker")
    assert (res.exit_code, res.stderr.strip()) == (1, f"Error: sifthinker@champion is not set in {cfg.tracking_uri}: "
                                                      "nothing to roll back")
    model_versions.promote(cfg, "sifthinker", v1)
    res = _cli(cfg, "rollback", "sifthinker")
    assert res.exit_code == 1 and "has no recorded previous champion (it was the first)" in res.stderr
    assert _champion(cfg) == v1
    res = _cli(cfg, "rollback", "nope")
    assert res.exit_code == 1 and "no registered model named 'nope'" in res.stderr
    # another alias keeps its own history: staging v2 -> v3, rolled back to v2, champion untouched
    _, v2, v3 = store[1]
    model_versions.promote(cfg, "sifthinker", v2, alias="staging")
    model_versions.promote(cfg, "sifthinker", v3, alias="staging")
    assert rollback(cfg, "sifthinker", alias="staging")["to"] == v2
    assert model_versions.describe("sifthinker", cfg)["aliases"] == {"challenger": v3, "champion": v1, "staging": v2}
