"""`sifthinker.storage.locations.localize` against a real moto S3 server (boto3, AWS_ENDPOINT_URL*)."""

import pytest

from sifthinker.storage.locations import StorageError, localize, split_s3


def put(s3, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=body)


def test_an_s3_prefix_is_downloaded_once_into_the_cache(s3, tmp_path):
    files = {"records.json": b"[]", "images/0.png": b"\x89PNG-0", "images/sub/1.png": b"\x89PNG-1"}
    for rel, body in files.items():
        put(s3, f"bench/a/{rel}", body)
    put(s3, "bench/ab/other.json", b"not under bench/a/")  # a sibling whose name starts the same
    uri = f"s3://{s3.bucket}/bench/a"
    local = localize(uri, tmp_path / "cache")
    got = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
           if p.is_file() and not p.name.startswith(".")}
    assert got == files
    assert local.parent == tmp_path / "cache"
    # the second call reuses the folder: deleting the objects changes nothing for it
    for rel in files:
        s3.client().delete_object(Bucket=s3.bucket, Key=f"bench/a/{rel}")
    assert localize(f"{uri}/", tmp_path / "cache") == local  # a trailing slash names the same prefix
    assert (local / "images/sub/1.png").read_bytes() == b"\x89PNG-1"


def test_an_interrupted_download_is_done_again(s3, tmp_path):
    put(s3, "half/x.txt", b"x")
    uri = f"s3://{s3.bucket}/half"
    local = localize(uri, tmp_path / "c")
    (local / ".sifthinker-complete").unlink()  # as if the process died before the marker was written
    (local / "x.txt").write_bytes(b"truncated")
    assert localize(uri, tmp_path / "c") == local and (local / "x.txt").read_bytes() == b"x"


def test_a_single_object_prefix_and_the_s3_specific_endpoint_variable(s3, tmp_path, monkeypatch):
    put(s3, "one/file.json", b"{}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # wrong on purpose: the _S3 one wins
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    local = localize(f"s3://{s3.bucket}/one/file.json", tmp_path)
    assert (local / "file.json").read_bytes() == b"{}"


def test_a_local_path_is_returned_as_it_is(tmp_path):
    assert localize(tmp_path, tmp_path / "cache") == tmp_path
    assert localize(f"file://{tmp_path}", tmp_path / "cache") == tmp_path
    assert not (tmp_path / "cache").exists()
    with pytest.raises(StorageError, match="gone does not exist"):
        localize(tmp_path / "gone", tmp_path / "cache")


@pytest.mark.parametrize("uri, message", [
    ("s3://{bucket}/empty/prefix", "s3://{bucket}/empty/prefix holds no objects"),
    ("s3://no-such-bucket-x/p", "cannot read s3://no-such-bucket-x/p: An error occurred (NoSuchBucket)"),
])
def test_errors_are_one_clear_line(s3, tmp_path, uri, message):
    uri, message = uri.format(bucket=s3.bucket), message.format(bucket=s3.bucket)
    with pytest.raises(StorageError) as e:
        localize(uri, tmp_path)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-downloaded is left behind


def test_an_unreachable_endpoint_is_one_line(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match=r"^cannot read s3://b/p: Could not connect to the endpoint URL"):
        localize("s3://b/p", tmp_path)


def test_split_s3():
    assert split_s3("s3://b/a/b/") == ("b", "a/b") and split_s3("s3://b") == ("b", "")
    with pytest.raises(StorageError, match="names no bucket"):
        split_s3("s3:///x")
