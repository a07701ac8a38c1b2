"""Sharded builds: parallel workers, resume after an interruption (a real SIGKILL), S3 in and out (moto)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import data_build_cmd, done, snapshot

from sifthinker.cli import main
from sifthinker.data.build import SyntheticSource, build_records, load_records
from sifthinker.data.checks import check_dataset
from sifthinker.data.sources import SourceItem
from sifthinker.storage.locations import StorageError, localize

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "data"


def test_workers_do_not_change_a_byte(tmp_path):
    one = build_records(SyntheticSource(96, 72), 10, 3, tmp_path / "one", progress=False, shard_size=3)
    two = build_records(SyntheticSource(96, 72), 10, 3, tmp_path / "two", progress=False, shard_size=3, workers=2)
    assert one.shards == two.shards == 4 and one.num_records == 10
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


class StopAfter(SyntheticSource):
    """The synthetic source, with Ctrl-C when the builder loads item ``at`` (in process, shards in order)."""

    def __init__(self, at: int):
        super().__init__(96, 72)
        self.at = at

    def load(self, entry) -> SourceItem:
        if entry.index == self.at:
            raise KeyboardInterrupt
        return super().load(entry)


def test_an_interrupted_build_resumes_from_its_finished_shards(tmp_path):
    reference = tmp_path / "ref"
    build_records(SyntheticSource(96, 72), 9, 1, reference, progress=False, shard_size=3)
    out = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        build_records(StopAfter(7), 9, 1, out, progress=False, shard_size=3)
    assert not out.exists()
    summary = build_records(SyntheticSource(96, 72), 9, 1, out, progress=False, shard_size=3)
    assert summary.shards_resumed == 2  # shards 0-00000 and 0-00001 (items 0..5) were kept
    assert snapshot(out) == snapshot(reference)


def test_other_options_start_afresh(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        build_records(StopAfter(4), 6, 1, out, progress=False, shard_size=2)
    summary = build_records(SyntheticSource(96, 72), 6, 2, out, progress=False, shard_size=2)  # another seed
    assert summary.shards_resumed == 0 and [r["id"][:14] for r in load_records(out)] == ["synthetic-s2-0"] * 6


def test_sigkill_midway_then_the_same_command_gives_the_same_bytes(tmp_path):
    """The real thing: the whole process group (the builder and its workers) gets SIGKILL once some shards
    are finished; the same command then skips them and the dataset equals an uninterrupted build's."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SIFTHINKER_WORK_DIR": str(tmp_path / "work")}
    common = ["--num", "30", "--seed", "5", "--shard-size", "3", "--width", "160", "--height", "120"]
    ref = tmp_path / "ref"
    subprocess.run(data_build_cmd(*common, "--workers", "1", "--out", str(ref)), env=env, check=True, capture_output=True)

    out = tmp_path / "d"
    shards = tmp_path / ".d.partial" / "shards"
    proc = subprocess.Popen(data_build_cmd(*common, "--workers", "2", "--out", str(out)), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if shards.is_dir() and len(done(shards)) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = done(shards)
    assert not out.exists() and 3 <= len(finished) < 10

    res = subprocess.run(data_build_cmd(*common, "--workers", "2", "--out", str(out)), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{len(finished)} resumed" in res.stdout
    assert snapshot(out) == snapshot(ref)
    assert not (tmp_path / ".d.partial").exists()


# ---- S3 (moto) --------------------------------------------------------------------------------------------


def test_s3_round_trip_resume_and_refusal(s3, tmp_path):
    uri = f"s3://{s3.bucket}/builds/synthetic-6"
    first = build_records(SyntheticSource(96, 72), 6, 0, uri, progress=False, shard_size=2,
                          cache_dir=str(tmp_path / "cache"))
    keys = s3.keys("builds/synthetic-6/")
    assert {"records.json", "manifest.json", "rejections.jsonl", "build.json"} <= {k.rsplit("/", 1)[1] for k in keys}
    assert first.shards == 3 and first.out_dir == uri
    local = build_records(SyntheticSource(96, 72), 6, 0, tmp_path / "local", progress=False, shard_size=2)
    fetched = localize(uri, tmp_path / "dl")
    got = {k: v for k, v in snapshot(fetched).items() if not k.startswith(".")}  # less localize's own marker
    assert got == snapshot(tmp_path / "local")  # the same bytes as a local build
    assert check_dataset(fetched).success and local.num_records == 6
    again = build_records(SyntheticSource(96, 72), 6, 0, uri, progress=False, shard_size=2,
                          cache_dir=str(tmp_path / "cache"))
    assert again.shards_resumed == 3
    with pytest.raises(StorageError, match="holds another build"):
        build_records(SyntheticSource(96, 72), 6, 1, uri, progress=False, shard_size=2,
                      cache_dir=str(tmp_path / "cache"))


def test_s3_input_and_images_fetched_one_by_one(s3, tmp_path, monkeypatch):
    client = s3.client()
    root = FIXTURES / "jsonl"
    for p in root.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), s3.bucket, f"inputs/jsonl/{p.relative_to(root).as_posix()}")
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    res = CliRunner().invoke(main, ["data", "build", "--source", "jsonl", "--input",
                                    f"s3://{s3.bucket}/inputs/jsonl/items.jsonl", "--depth", "colour",
                                    "--out", str(tmp_path / "from-s3")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["data", "build", "--source", "jsonl", "--input", str(root / "items.jsonl"),
                                    "--depth", "colour", "--out", str(tmp_path / "from-disk")])
    assert res.exit_code == 0, res.output
    a, b = load_records(tmp_path / "from-s3"), load_records(tmp_path / "from-disk")
    assert [r["id"] for r in a] == ["kitchen-1", "street-1"] and a == b
    assert (tmp_path / "from-s3" / "rejections.jsonl").read_bytes() == (tmp_path / "from-disk" / "rejections.jsonl").read_bytes()


def test_a_recipe_mixes_sources_and_holds_eval_items_out(tmp_path, monkeypatch):
    """The rebuild recipe's shape: Visual-CoT plus TallyQA in one dataset, train and eval split by id hash."""
    from sifthinker.config.run_config import RunConfig
    from sifthinker.data.build import build_dataset

    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path / "work"))
    cfg = RunConfig.from_dict({"data": {
        "source": "mix", "num_train": 4, "num_eval": 2, "holdout": 0.5, "depth": "colour",
        "sources": [{"name": "viscot", "input": str(FIXTURES / "viscot/viscot_363k.json"), "share": 1},
                    {"name": "tallyqa", "input": str(FIXTURES / "tallyqa/tallyqa.json"), "share": 1}]}})
    train = build_dataset(cfg, "train", tmp_path / "train", progress=False)
    evl = build_dataset(cfg, "eval", tmp_path / "eval", progress=False)
    tr, ev = load_records(tmp_path / "train"), load_records(tmp_path / "eval")
    assert train.source == "viscot+tallyqa" and {r["source"] for r in tr} == {"viscot", "tallyqa"}
    assert [r["id"] for r in tr] == ["viscot-flickr30k-1", "tallyqa-101", "tallyqa-102"]  # parts in order
    assert [r["id"] for r in ev] == ["viscot-flickr30k-2"] and train.short == ["viscot: 1 of 2 records (the source ran out)"]
    assert not {r["id"] for r in tr} & {r["id"] for r in ev}  # the holdout never reaches train
    assert {r["split"] for r in tr} == {"train"} and {r["split"] for r in ev} == {"eval"}
    assert evl.num_records == 1
    for folder in ("train", "eval"):
        result = check_dataset(tmp_path / folder)
        assert result.success, result.failures
