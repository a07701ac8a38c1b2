"""Object-store outage: the real moto S3 server stopped in the middle of a checkpoint upload and started again
(on the same port; moto keeps its objects in this process, as a real store keeps them across a restart).

The upload rides out the outage (retries with backoff) and completes, marker last; when the outage outlasts
the retry budget (``SIFTHINKER_S3_RETRY_SECONDS``, shortened here), the upload fails with one line and the
half-written checkpoint is never taken for a complete one: a rerun resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from helpers import AWS_ENV, free_port

from sifthinker.storage.locations import StorageError

pytest.importorskip("transformers")

from sifthinker.training.checkpoints import MARKER, CheckpointPlan  # noqa: E402

BUCKET = "outage"


class Store:
    """A moto server that can be stopped and started again on its port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._cls = ThreadedMotoServer
        self.server = None
        self.start()

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def store(monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    s = Store()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s.endpoint)
    s.client().create_bucket(Bucket=BUCKET)
    yield s
    s.stop()


def _checkpoint(plan: CheckpointPlan, step: int, files: int = 12) -> Path:
    """A checkpoint folder as the trainer leaves it (several MB in several objects), before its marker."""
    ckpt = plan.local_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    for i in range(files):
        (ckpt / f"shard-{i:02d}.bin").write_bytes(bytes([step % 256]) * 512 * 1024)
    return ckpt


def _outage_after_first_object(store: Store, prefix: str, down_s: float, log: dict) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 60
        while not store.keys(prefix) and time.monotonic() < deadline:
            time.sleep(0.005)
        log["before"] = len(store.keys(prefix))
        store.stop()
        log["stopped_at"] = time.monotonic()
        time.sleep(down_s)
        store.start()
        log["started_at"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_checkpoint_upload_rides_out_a_store_restart(store, tmp_path, monkeypatch, caplog):
    caplog.set_level("WARNING", logger="sifthinker.storage.remote")
    monkeypatch.setenv("SIFTHINKER_S3_RETRY_SECONDS", "60")
    plan = CheckpointPlan.for_run(f"s3://{BUCKET}/ckpt", tmp_path, "grpo-sif-o1", 2, 2, {})
    prefix = "ckpt/grpo-sif-o1/checkpoint-2/"
    log: dict = {}
    outage = _outage_after_first_object(store, prefix, 3.0, log)
    t0 = time.monotonic()
    plan.complete(_checkpoint(plan, 2), 2)  # the trainer's on_save: state files, marker, upload
    done_at = time.monotonic()
    outage.join(10)
    assert "started_at" in log and 1 <= log["before"] < 14  # it really went down in the middle of the upload
    assert any("retrying in" in r.getMessage() for r in caplog.records)  # our backoff, not only boto's
    keys = store.keys(prefix)
    assert len(keys) == 14 and f"{prefix}{MARKER}" in keys  # 12 shards, trainer_state, marker: all there
    body = store.client().get_object(Bucket=BUCKET, Key=f"{prefix}shard-11.bin")["Body"].read()
    assert body == bytes([2]) * 512 * 1024
    # Another machine resumes from it.
    other = CheckpointPlan.for_run(f"s3://{BUCKET}/ckpt", tmp_path / "b", "grpo-sif-o1", 2, 2, {})
    assert other.fetch() == other.local_dir / "checkpoint-2"
    print(f"S3 down {log['started_at'] - log['stopped_at']:.1f}s mid-upload: upload done {done_at - t0:.1f}s after it "
          f"began, {done_at - log['started_at']:.1f}s after the store was back; lost 0 objects")


def test_an_outage_past_the_budget_fails_in_one_line_and_leaves_no_complete_looking_checkpoint(store, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setenv("SIFTHINKER_S3_RETRY_SECONDS", "2")
    plan = CheckpointPlan.for_run(f"s3://{BUCKET}/ckpt", tmp_path, "grpo-sif-o2", 2, 2, {})
    plan.complete(_checkpoint(plan, 2, files=2), 2)  # a complete checkpoint first
    log: dict = {}
    outage = _outage_after_first_object(store, "ckpt/grpo-sif-o2/checkpoint-4/", 6.0, log)
    with pytest.raises(StorageError) as err:
        plan.complete(_checkpoint(plan, 4), 4)
    assert str(err.value).startswith("cannot write s3://outage/ckpt/grpo-sif-o2/checkpoint-4") and "\n" not in str(err.value)
    outage.join(15)
    # While the store is down a rerun does not mistake "unreachable" for "no checkpoint" (it would start over).
    # Back up: checkpoint-4 is half there without its marker, so the rerun resumes from checkpoint-2.
    keys = store.keys("ckpt/grpo-sif-o2/checkpoint-4/")
    assert keys and f"ckpt/grpo-sif-o2/checkpoint-4/{MARKER}" not in keys
    other = CheckpointPlan.for_run(f"s3://{BUCKET}/ckpt", tmp_path / "b", "grpo-sif-o2", 2, 2, {})
    assert other.fetch() == other.local_dir / "checkpoint-2"


def test_an_unreachable_store_is_an_error_not_an_absent_marker(store, tmp_path, monkeypatch):
    from sifthinker.storage import remote

    monkeypatch.setenv("SIFTHINKER_S3_RETRY_SECONDS", "1")
    plan = CheckpointPlan.for_run(f"s3://{BUCKET}/ckpt", tmp_path, "grpo-sif-o3", 2, 2, {})
    plan.complete(_checkpoint(plan, 2, files=1), 2)
    marker = f"s3://{BUCKET}/ckpt/grpo-sif-o3/checkpoint-2/{MARKER}"
    assert remote.object_exists(marker) and not remote.object_exists(marker + ".nope")
    store.stop()
    try:
        # Was: False on any error, so pruning after an upload could delete complete checkpoints, and a
        # rerun could take them for incomplete ones.
        with pytest.raises(StorageError, match="cannot read"):
            remote.object_exists(marker)
        with pytest.raises(StorageError, match="cannot list"):
            CheckpointPlan.for_run(f"s3://{BUCKET}/ckpt", tmp_path / "b", "grpo-sif-o3", 2, 2, {}).fetch()
    finally:
        store.start()
