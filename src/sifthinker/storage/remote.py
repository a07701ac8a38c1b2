"""Writing folders to ``s3://`` (training checkpoints), beside :func:`sifthinker.storage.locations.localize`.

The S3 client, endpoint and credentials are :mod:`sifthinker.storage.s3_endpoint`'s (through
:mod:`sifthinker.storage.locations`), as for every other S3 reader. A folder is written object by object,
so a reader must not trust one that lacks its marker file: callers write the marker last.
Every failure is a :class:`~sifthinker.storage.locations.StorageError` with a one-line message.

An outage of the store (connection refused or reset, timeouts, 5xx, throttling) is retried per request,
with exponential backoff (0.5 s doubling to 30 s), for up to ``SIFTHINKER_S3_RETRY_SECONDS`` (default
300) before the error is raised: a checkpoint upload rides out a store restart instead of failing the
training step. Requests are idempotent (a whole object put, listed, read or deleted again), so a retry
never leaves a different result than one attempt would.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sifthinker.names import Env
from sifthinker.storage.locations import StorageError, _client, _one_line, split_s3

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_RETRY_SECONDS = 300.0
_TRANSIENT_CODES = {"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "InternalError",
                    "ServiceUnavailable", "RequestTimeTooSkewed"}

__all__ = ["delete_prefix", "download_folder", "list_folders", "object_exists", "upload_folder"]


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _transient(e: BaseException) -> bool:
    """An error the store returns when it is down or overloaded, not one about the request."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(e, ConnectionError | HTTPClientError):  # refused, reset, timeouts (botocore's own classes)
        return True
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or err.get("Code") in _TRANSIENT_CODES
    return False


def retry_seconds() -> float:
    raw = os.environ.get(Env.S3_RETRY_SECONDS.value, "")
    try:
        value = float(raw) if raw else DEFAULT_RETRY_SECONDS
    except ValueError:
        raise StorageError(f"{Env.S3_RETRY_SECONDS.value}={raw!r}: expected seconds (a number >= 0)") from None
    if value < 0:
        raise StorageError(f"{Env.S3_RETRY_SECONDS.value}={raw!r}: expected seconds (a number >= 0)")
    return value


def _retrying(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, retried with backoff while the store is unreachable, up to :func:`retry_seconds`."""
    budget, delay, t0 = retry_seconds(), 0.5, time.monotonic()
    while True:
        try:
            return fn()
        except _boto_errors() as e:
            waited = time.monotonic() - t0
            if not _transient(e) or waited + delay > budget:
                raise
            log.warning("%s: %s; retrying in %.1fs (%.0fs of %.0fs spent)", what, _one_line(e), delay, waited,
                        budget)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def upload_folder(local: Path | str, uri: str, last: str | None = None) -> int:
    """Upload every file under ``local`` to ``uri``; ``last`` (a relative path) goes last. Returns the count."""
    bucket, prefix = split_s3(uri.rstrip("/"))
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == last)  # stable: the marker moves to the end
    try:
        client = _client()
        for path in files:
            key = _join(prefix, path.relative_to(local).as_posix())
            _retrying(f"upload s3://{bucket}/{key}", lambda p=path, k=key: client.upload_file(str(p), bucket, k))
    except _boto_errors() as e:
        raise StorageError(f"cannot write {uri}: {_one_line(e)}") from e
    return len(files)


def list_folders(uri: str) -> list[str]:
    """Names of the "sub-folders" directly under ``uri`` (common prefixes), sorted."""
    bucket, prefix = split_s3(uri.rstrip("/"))
    folder = f"{prefix}/" if prefix else ""
    names: set[str] = set()

    def pages() -> list[dict]:
        return list(_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/"))

    try:
        for page in _retrying(f"list {uri}", pages):
            names |= {p["Prefix"][len(folder):].rstrip("/") for p in page.get("CommonPrefixes", [])}
    except _boto_errors() as e:
        raise StorageError(f"cannot list {uri}: {_one_line(e)}") from e
    return sorted(names)


def object_exists(uri: str) -> bool:
    """Whether the object exists; an unreachable store is an error, not "no" (a checkpoint's marker
    must not read as absent during an outage: the run would start over, or prune a good checkpoint)."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    try:
        _retrying(f"read {uri}", lambda: _client().head_object(Bucket=bucket, Key=key))
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise StorageError(f"cannot read {uri}: {_one_line(e)}") from e
    except _boto_errors() as e:
        raise StorageError(f"cannot read {uri}: {_one_line(e)}") from e
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
                _retrying(f"download s3://{bucket}/{obj['Key']}",
                          lambda k=obj["Key"], d=dest: client.download_file(bucket, k, str(d)))
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
                _retrying(f"delete under {uri}", lambda k=keys: client.delete_objects(Bucket=bucket, Delete={"Objects": k}))
                n += len(keys)
    except _boto_errors() as e:
        raise StorageError(f"cannot delete {uri}: {_one_line(e)}") from e
    return n
