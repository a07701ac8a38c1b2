"""`sifthinker data export --format llamafactory`: the sharegpt file and its dataset_info.json entry."""

import json
import os
import shutil

from click.testing import CliRunner

from sifthinker.cli import main
from sifthinker.data.build import SyntheticSource, build_records, load_records

ENTRY = {"file_name": "SIF-50K.json", "formatting": "sharegpt",
         "columns": {"messages": "messages", "images": "images"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def media(dataset_dir, path):
    """An image path as LLaMA-Factory resolves it: joined to media_dir (= dataset_dir) when that file exists."""
    joined = os.path.join(dataset_dir, path)
    return joined if os.path.isfile(joined) else path


def test_export_writes_sharegpt_items_and_the_dataset_info_entry(tmp_path):
    data = tmp_path / "built"
    build_records(SyntheticSource(96, 72), 4, 0, data, progress=False)
    out = tmp_path / "lf"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"mllm_demo": {"file_name": "mllm_demo.json"}}))
    res = CliRunner().invoke(main, ["data", "export", "--format", "llamafactory", "--name", "SIF-50K", str(data), str(out)])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {"mllm_demo": {"file_name": "mllm_demo.json"}, "SIF-50K": ENTRY}  # other entries kept
    items = json.loads((out / "SIF-50K.json").read_text())
    records = load_records(data)
    assert len(items) == len(records) == 4
    for item, rec in zip(items, records, strict=True):
        assert [m["role"] for m in item["messages"]] == ["user", "assistant"]
        assert item["messages"][0]["content"].count("<image>") == len(item["images"]) == 2
        assert item["messages"][1]["content"] == rec["messages"][1]["content"]
        for path, rel in zip(item["images"], rec["images"], strict=True):
            assert os.path.samefile(media(out, path), data / rel)


def test_copied_images_make_the_export_stand_alone(tmp_path):
    data = tmp_path / "built"
    build_records(SyntheticSource(96, 72), 2, 0, data, progress=False)
    res = CliRunner().invoke(main, ["data", "export", "--copy-images", "--name", "sif-mini", str(data),
                                    str(tmp_path / "lf")])
    assert res.exit_code == 0, res.output
    moved = shutil.move(tmp_path / "lf", tmp_path / "moved")
    shutil.rmtree(data)
    items = json.loads((moved / "sif-mini.json").read_text())
    assert json.loads((moved / "dataset_info.json").read_text())["sif-mini"]["file_name"] == "sif-mini.json"
    assert all(os.path.isfile(media(moved, p)) and not os.path.isabs(p) for it in items for p in it["images"])


def test_export_of_a_folder_without_records_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["data", "export", str(tmp_path), str(tmp_path / "out")])
    assert res.exit_code == 1 and res.output.startswith("Error: no records.json in")


def test_the_cli_names_the_export_after_the_folder(tmp_path):
    data = tmp_path / "my-scenes"
    build_records(SyntheticSource(96, 72), 2, 0, data, progress=False)
    res = CliRunner().invoke(main, ["data", "export", str(data), str(tmp_path / "lf")])
    assert res.exit_code == 0, res.output
    assert set(json.loads((tmp_path / "lf" / "dataset_info.json").read_text())) == {"my-scenes"}  # not SIF-50K
