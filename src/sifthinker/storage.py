"""Data locations: ``localize(uri, cache_dir)`` turns a local folder or an ``s3://bucket/prefix`` into a
local folder.

An S3 prefix is downloaded once, with boto3, into ``<cache_dir>/<hash of the URI>`` and reused on later
calls (a marker file is written last, so an interrupted download is started again rather than trusted).
boto3 reads credentials the usual way (environment, profile, instance role); the endpoint comes from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when set (MinIO, moto, any S3-compatible store).
A local path is returned as it is. Every failure is a :class:`StorageError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

__all__ = ["StorageError", "is_s3", "localize", "split_s3"]

_COMPLETE = ".sifthinker-complete"
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StorageError(RuntimeError):
    """A location that cannot be read: a missing folder, an empty or unreachable S3 prefix."""


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")`` (no leading or trailing slash on the prefix)."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def _client():
    import boto3

    # Older boto3 releases ignore AWS_ENDPOINT_URL*; passing it explicitly works with every release.
    endpoint = next((os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), None)
    return boto3.client("s3", endpoint_url=endpoint)


def _keys(client, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(key, path relative to the prefix) of every object under ``prefix`` (a folder, or one object)."""
    folder = f"{prefix}/" if prefix else ""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            rel = key[len(folder):]
            if rel and not key.endswith("/"):  # "folder/" placeholder objects hold nothing
                out.append((key, rel))
    if not out and prefix:  # the prefix may name a single object
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [(o["Key"], PurePosixPath(o["Key"]).name) for o in page.get("Contents", []) if o["Key"] == prefix]
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def localize(uri: str | Path, cache_dir: str | Path) -> Path:
    """A local folder with the contents of ``uri`` (see the module docstring)."""
    if not is_s3(uri):
        p = Path(str(uri).removeprefix("file://"))
        if not p.exists():
            raise StorageError(f"{p} does not exist")
        return p
    uri = str(uri).rstrip("/")
    bucket, prefix = split_s3(uri)
    target = Path(cache_dir) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / _COMPLETE).is_file():
        return target

    from botocore.exceptions import BotoCoreError, ClientError

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        client = _client()
        keys = _keys(client, bucket, prefix)
        if not keys:
            raise StorageError(f"{uri} holds no objects")
        for key, rel in keys:
            dest = tmp / rel
            if tmp.resolve() not in dest.resolve().parents:  # a key with ".." must not write outside the cache
                raise StorageError(f"{uri}: refusing object key {key!r} (it points outside the folder)")
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(dest))
        (tmp / _COMPLETE).write_text(f"{uri}\n{len(keys)} objects\n")
        if target.exists():  # an earlier, interrupted download
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _COMPLETE).is_file():  # a concurrent download that finished first is fine
                raise
    except StorageError:
        raise
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"cannot read {uri}: {_one_line(e)}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
