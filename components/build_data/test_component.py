import json
from pathlib import Path

from components.build_data.component import build_data
from components.conftest import io_types


def test_spec():
    ins, outs = io_types(build_data)
    assert ins == {"recipe": "String", "pipeline_run": "String"}
    assert outs == {"train_data": "system.Dataset@0.0.1", "eval_data": "system.Dataset@0.0.1"}
    assert build_data.name == "build-data"


def test_builds_train_and_eval_folders(built_data):
    train, evl = built_data
    for data, split, n in ((train, "train", 12), (evl, "eval", 6)):
        records = json.loads((Path(data.path) / "records.json").read_text())
        assert len(records) == n and {r["split"] for r in records} == {split}
        assert (Path(data.path) / records[0]["image"]).is_file()
        assert data.metadata["split"] == split and data.metadata["num_records"] == n
        assert sum(data.metadata["categories"].values()) == n
    train_ids = {r["id"] for r in json.loads((Path(train.path) / "records.json").read_text())}
    eval_ids = {r["id"] for r in json.loads((Path(evl.path) / "records.json").read_text())}
    assert not train_ids & eval_ids
