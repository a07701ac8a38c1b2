"""Writing folders to ``s3://`` (training checkpoints), beside :func:`sifthinker.storage.localize`.

The S3 client, endpoint and credentials are :mod:`sifthinker.s3_endpoint`'s (through
:mod:`sifthinker.storage`), as for every other S3 reader. A folder is written object by object,
so a reader must not trust one that lacks its marker file: callers write the marker last.
Every failure is a :class:`~sifthinker.storage.StorageError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path

from sifthinker.storage import StorageError, _client, _one_line, split_s3

__all__ = ["delete_prefix", "download_folder", "list_folders", "object_exists", "upload_folder"]


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def upload_folder(local: Path | str, uri: str, last: str | None = None) -> int:
    """Upload every file under ``local`` to ``uri``; ``last`` (a relative path) goes last. Returns the count."""
    bucket, prefix = split_s3(uri.rstrip("/"))
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == last)  # stable: the marker moves to the end
    try:
        client = _client()
        for path in files:
            client.upload_file(str(path), bucket, _join(prefix, path.relative_to(local).as_posix()))
    except _boto_errors() as e:
        raise StorageError(f"cannot write {uri}: {_one_line(e)}") from e
    return len(files)


def list_folders(uri: str) -> list[str]:
    """Names of the "sub-folders" directly under ``uri`` (common prefixes), sorted."""
    bucket, prefix = split_s3(uri.rstrip("/"))
    folder = f"{prefix}/" if prefix else ""
    names: set[str] = set()
    try:
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/")
        for page in pages:
            names |= {p["Prefix"][len(folder):].rstrip("/") for p in page.get("CommonPrefixes", [])}
    except _boto_errors() as e:
        raise StorageError(f"cannot list {uri}: {_one_line(e)}") from e
    return sorted(names)


def object_exists(uri: str) -> bool:
    bucket, key = split_s3(uri)
    try:
        _client().head_object(Bucket=bucket, Key=key)
    except _boto_errors():
        return False
    return True


def download_folder(uri: str, local: Path | str) -> Path:
    """Copy every object under ``uri`` into ``local`` (created); keys with ``..`` are refused."""
    bucket, prefix = split_s3(uri.rstrip("/"))
    local = Path(local)
    folder = f"{prefix}/" if prefix else ""
    try:
        client = _client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(folder):]
                dest = local / rel
                if not rel or local.resolve() not in dest.resolve().parents:
                    raise StorageError(f"{uri}: refusing object key {obj['Key']!r}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(dest))
    except _boto_errors() as e:
        raise StorageError(f"cannot read {uri}: {_one_line(e)}") from e
    return local


def delete_prefix(uri: str) -> int:
    """Delete every object under ``uri`` (a folder); returns how many."""
    bucket, prefix = split_s3(uri.rstrip("/"))
    folder = f"{prefix}/" if prefix else ""
    n = 0
    try:
        client = _client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                n += len(keys)
    except _boto_errors() as e:
        raise StorageError(f"cannot delete {uri}: {_one_line(e)}") from e
    return n
