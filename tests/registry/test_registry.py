"""Model registry: the embedded sqlite store and a real `mlflow server` with artifacts in (moto) S3."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sifthinker.cli import main
from sifthinker.config.run_config import RunConfig
from sifthinker.registry import model_versions
from sifthinker.registry.logged_models import logged_model_id

REPO = Path(__file__).resolve().parents[2]


def _model_dir(root: Path, marker: str) -> Path:
    d = root / f"model-{marker}"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"marker": marker}))
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (d / "sub" / "tokenizer.json").write_text("{}")
    return d


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    got = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".sifthinker-complete")
    return files == got and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def _unique_name(tmp_path: Path) -> str:
    return f"sif-{tmp_path.name.replace('_', '-')}"[:60]


@pytest.fixture(scope="module")
def local_work(tmp_path_factory):
    """One embedded store (the recipe default: sqlite under the work dir) for the module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIFTHINKER_WORK_DIR", str(tmp_path_factory.mktemp("registry-work")))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("SIFTHINKER_MODEL_CACHE", raising=False)
        yield


@pytest.fixture
def local_cfg(local_work, tmp_path, monkeypatch) -> RunConfig:
    # mlflow.set_tracking_uri (called by tracking.configure) also exports MLFLOW_TRACKING_URI, which
    # RunConfig.tracking_uri honours: clear what an earlier test against the server left behind
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    assert cfg.registry.tracking_uri is None and cfg.tracking_uri.startswith("sqlite:///")
    # a fresh model name per test: the store is shared by the module
    return dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, model_name=_unique_name(tmp_path)))


@pytest.fixture
def server_cfg(mlflow_server, tmp_path, monkeypatch) -> RunConfig:
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    # a fresh model name per test: the server is shared by the whole session
    name = _unique_name(tmp_path)
    return dataclasses.replace(
        cfg,
        registry=dataclasses.replace(cfg.registry, tracking_uri=mlflow_server.uri, model_name=name),
    )


def test_register_sets_tags_alias_and_recipe_artifact(local_cfg, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    data = tmp_path / "data"
    data.mkdir()
    (data / "records.json").write_text("[]")
    rv = model_versions.register_model(
        local_cfg,
        _model_dir(tmp_path, "a"),
        metrics={"format_validity": 0.9, "accuracy": 0.5, "per_category": {"depth": 0.25}},
        lineage={"data_dir": str(data), "parent_runs": {"sft": "run-sft", "evaluate": "run-eval"}},
    )
    assert rv.name == local_cfg.registry.model_name and rv.version == "1" and rv.uri == f"models:/{rv.name}/1"
    # the version's source is its logged model's artifact folder (MLflow 3), which holds the files
    assert rv.source_uri.startswith("file://") and re.search(r"/models/m-[0-9a-f]+/artifacts$", rv.source_uri)
    client = MlflowClient(local_cfg.tracking_uri, registry_uri=local_cfg.tracking_uri)
    mv = client.get_model_version(rv.name, rv.version)
    assert mv.run_id == rv.run_id and mv.source == rv.source_uri
    assert str(client.get_model_version_by_alias(rv.name, "challenger").version) == "1"
    # a few tags MLflow has no field for, no metric wall
    data_hash = model_versions.dir_hash(data)
    assert mv.tags == {"recipe": "local", "data_fingerprint": data_hash}
    # the logged model: metrics (each once) and lineage as params, linked back to the version
    lm = client.get_logged_model(logged_model_id(client, mv))
    assert lm.name == rv.name and lm.source_run_id == rv.run_id and lm.status == LoggedModelStatus.READY
    assert {m.key: m.value for m in lm.metrics} == {"format_validity": 0.9, "accuracy": 0.5, "per_category.depth": 0.25}
    assert lm.params["parent_runs.sft"] == "run-sft" and lm.params["data_dir"] == str(data)
    assert lm.params["data_hash"] == data_hash and len(data_hash) == 64
    assert json.loads(lm.tags["mlflow.modelVersions"]) == [{"name": rv.name, "version": "1"}]
    assert {a.path for a in client.list_logged_model_artifacts(lm.model_id)} >= {"config.json", "model.safetensors"}
    # the register stage run: tagged stage, the full recipe as an artifact
    run = client.get_run(rv.run_id)
    assert run.data.tags["sifthinker.stage"] == "register" and run.info.run_name == "register"
    recipe = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/recipe.yaml")
    assert RunConfig.from_dict(yaml.safe_load(recipe)) == local_cfg
    assert model_versions.get_metrics(local_cfg, f"models:/{rv.name}/1")["accuracy"] == 0.5


def test_promote_resolve_and_describe_on_embedded_store(local_cfg, tmp_path, monkeypatch):
    a, b = _model_dir(tmp_path, "a"), _model_dir(tmp_path, "b")
    v1 = model_versions.register_model(local_cfg, a, {"accuracy": 0.1}, {})
    v2 = model_versions.register_model(local_cfg, b, {"accuracy": 0.2}, {})
    name = v1.name
    assert model_versions.promote(local_cfg, name, v1.version)["previous"] is None
    assert model_versions.promote(local_cfg, name, v2.version) == {
        "name": name, "version": "2", "alias": "champion", "previous": "1",
    }  # fmt: skip
    d = model_versions.describe(name, local_cfg)
    assert d["aliases"] == {"challenger": "2", "champion": "2"}
    assert [v["version"] for v in d["versions"]] == ["1", "2"]
    assert d["versions"][1]["tags"]["previous.champion"] == "1"
    assert d["versions"][0]["tags"]["previous.champion"] == "none"
    assert d["tags"]["last_promotion.champion"] == "1 -> 2"

    champ = model_versions.resolve(f"models:/{name}@champion", local_cfg)
    assert _same_tree(b, champ)
    assert _same_tree(a, model_versions.resolve(f"models:/{name}/1", local_cfg))
    # cached: a second resolve downloads nothing
    import mlflow.artifacts

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: pytest.fail("downloaded again"))
    assert model_versions.resolve(f"models:/{name}@champion", local_cfg) == champ
    # a moved alias resolves to the other version
    model_versions.promote(local_cfg, name, "1")
    assert _same_tree(a, model_versions.resolve(f"models:/{name}@champion", local_cfg))
    # a local folder passes through
    assert model_versions.resolve(str(a)) == a


def test_registry_errors_are_clear(local_cfg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(model_versions.RegistryError, match="does not exist or is empty"):
        model_versions.register_model(local_cfg, empty, {}, {})
    rv = model_versions.register_model(local_cfg, _model_dir(tmp_path, "a"), {}, {})
    with pytest.raises(model_versions.RegistryError, match=r"has no version 7 in sqlite:///.* \(versions: 1\)$"):
        model_versions.promote(local_cfg, rv.name, 7)
    with pytest.raises(model_versions.RegistryError, match="a model version is a positive integer, got 'abc'"):
        model_versions.promote(local_cfg, rv.name, "abc")
    with pytest.raises(model_versions.RegistryError, match="does not exist"):
        model_versions.resolve(f"models:/{rv.name}@nope", local_cfg)
    with pytest.raises(model_versions.RegistryError, match="expected models:/NAME@alias"):
        model_versions.parse_models_uri("models:/a/b/c")
    with pytest.raises(model_versions.RegistryError, match="no registered model"):
        model_versions.describe("missing", local_cfg)
    assert model_versions.parse_models_uri("models:/m@champion") == ("m", "champion", None)
    assert model_versions.parse_models_uri("models:/m/3") == ("m", None, "3")


def test_reading_never_creates_a_store(tmp_path):
    db = tmp_path / "none" / "x.db"
    uri = f"sqlite:///{db}"
    reads = {
        "describe": lambda: model_versions.describe("m", uri),
        "promote": lambda: model_versions.promote(uri, "m", 1),
        "get_version": lambda: model_versions.get_version(uri, "models:/m@champion"),
        "resolve": lambda: model_versions.resolve("models:/m/1", tracking_uri=uri, cache_dir=tmp_path / "cache"),
    }
    for what, read in reads.items():
        with pytest.raises(model_versions.RegistryError, match=f"^no MLflow store at {re.escape(str(db))}: "):
            read()
        assert not db.parent.exists(), what


def test_register_on_mlflow_server_puts_artifacts_in_s3(server_cfg, mlflow_server, tmp_path):
    src = _model_dir(tmp_path, "s3")
    rv = model_versions.register_model(server_cfg, src, {"accuracy": 0.75}, {"data_hash": "abc"})
    # the server proxies artifacts: the source is an mlflow-artifacts URI backed by the S3 bucket
    assert rv.source_uri.startswith("mlflow-artifacts:/") and re.search(r"/models/m-[0-9a-f]+/artifacts$", rv.source_uri)
    key_prefix = rv.source_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    keys = set(mlflow_server.s3.keys(key_prefix))
    assert {f"{key_prefix}/config.json", f"{key_prefix}/model.safetensors", f"{key_prefix}/sub/tokenizer.json"} <= keys
    run_prefix = key_prefix.split("/models/")[0] + f"/{rv.run_id}/artifacts"
    body = mlflow_server.s3.client().get_object(Bucket=mlflow_server.s3.bucket, Key=f"{run_prefix}/recipe.yaml")["Body"]
    assert yaml.safe_load(body.read())["registry"]["model_name"] == server_cfg.registry.model_name
    obj = mlflow_server.s3.client().get_object(Bucket=mlflow_server.s3.bucket, Key=f"{key_prefix}/model.safetensors")
    assert obj["Body"].read() == (src / "model.safetensors").read_bytes()

    model_versions.promote(server_cfg, rv.name, rv.version)
    local = model_versions.resolve(f"models:/{rv.name}@champion", server_cfg)
    assert _same_tree(src, local)
    d = model_versions.describe(rv.name, server_cfg.tracking_uri)
    assert d["aliases"] == {"challenger": "1", "champion": "1"}
    assert d["versions"][0]["metrics"]["accuracy"] == 0.75
    assert d["versions"][0]["tags"]["data_fingerprint"] == "abc"


def test_cli_promote_and_list(server_cfg, tmp_path):
    uri = server_cfg.tracking_uri
    v1 = model_versions.register_model(server_cfg, _model_dir(tmp_path, "a"), {"accuracy": 0.5}, {})
    v2 = model_versions.register_model(server_cfg, _model_dir(tmp_path, "b"), {"accuracy": 0.6}, {})
    runner = CliRunner()
    res = runner.invoke(main, ["model", "promote", v1.name, "--version", v2.version, "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert f"{v1.name}@champion: version none -> 2" in res.output
    res = runner.invoke(main, ["model", "promote", v1.name, "--version", "1", "--alias", "champion", "--tracking-uri", uri])
    assert res.exit_code == 0 and "version 2 -> 1" in res.output
    res = runner.invoke(main, ["model", "list", v1.name, "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines()]
    assert rows[0] == [f"{v1.name}:", "2", "version(s)"]
    assert rows[1][:6] == ["version", "aliases", "format_validity", "accuracy", "grounding_acc50", "depth_consistency"]
    assert rows[2][:4] == ["2", "challenger", "-", "0.600"] and rows[3][:4] == ["1", "champion", "-", "0.500"]
    assert len(rows) == 4 and max(len(line) for line in res.output.splitlines()) < 120  # one readable table
    res = runner.invoke(main, ["model", "list", v1.name, "--tracking-uri", uri, "--json"])
    assert json.loads(res.stdout)["aliases"] == {"champion": "1", "challenger": "2"}
    res = runner.invoke(main, ["model", "promote", v1.name, "--version", "9", "--tracking-uri", uri])
    assert res.exit_code == 1 and "has no version 9" in res.output
    res = runner.invoke(main, ["model", "list", v1.name, "--tracking-uri", uri, "--recipe", "local"])
    assert res.exit_code != 0 and "not both" in res.output


def test_cli_uses_the_recipe_store(local_cfg, tmp_path):
    rv = model_versions.register_model(local_cfg, _model_dir(tmp_path, "a"), {}, {})
    recipe = REPO / "recipes" / "local.yaml"
    res = CliRunner().invoke(main, ["model", "promote", rv.name, "--version", "1", "--recipe", str(recipe)])
    assert res.exit_code == 0, res.output
    assert f"{rv.name}@champion: version none -> 1" in res.stdout
    res = CliRunner().invoke(main, ["model", "resolve", f"models:/{rv.name}@champion", "--recipe", str(recipe)])
    assert res.exit_code == 0, res.output
    assert (Path(res.stdout.strip()) / "config.json").is_file()
