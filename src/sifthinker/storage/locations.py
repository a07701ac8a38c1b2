"""Data locations: ``localize(uri, cache_dir)`` turns a local folder or an ``s3://bucket/prefix`` into a
local folder; ``fetch_object`` brings one object into a cache (the data build fetches each image as a
worker needs it, never a whole image bucket); :class:`S3Prefix` writes, lists and deletes objects under
a prefix (the data build's output).

An S3 prefix is downloaded once, with boto3, into ``<cache_dir>/<hash of the URI>`` and reused on later
calls (a marker file is written last, so an interrupted download is started again rather than trusted).
The client, its endpoint (MinIO, moto, any S3-compatible store) and credentials are
:mod:`sifthinker.storage.s3_endpoint`'s, the one place every S3 reader gets them from.
A local path is returned as it is. Every failure is a :class:`StorageError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

__all__ = ["S3Prefix", "StorageError", "fetch_object", "is_s3", "localize", "split_s3"]

_COMPLETE = ".sifthinker-complete"


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
    from sifthinker.storage import s3_endpoint

    return s3_endpoint.client()


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


def _cached_path(uri: str, cache_dir: str | Path) -> Path:
    bucket, key = split_s3(uri)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(cache_dir) / "objects" / digest / PurePosixPath(key).name


def fetch_object(uri: str, cache_dir: str | Path) -> Path | None:
    """A local copy of one S3 object (downloaded once into ``cache_dir``), or None when there is none."""
    from botocore.exceptions import BotoCoreError, ClientError

    dest = _cached_path(uri, cache_dir)
    if dest.is_file():
        return dest
    bucket, key = split_s3(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        _client().download_file(bucket, key, str(tmp))
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise StorageError(f"cannot read {uri}: {_one_line(e)}") from e
    except BotoCoreError as e:
        raise StorageError(f"cannot read {uri}: {_one_line(e)}") from e
    tmp.replace(dest)  # complete objects only under the final name
    return dest


class S3Prefix:
    """Objects under ``s3://bucket/prefix``, addressed by their path relative to the prefix."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_s3(self.uri)
        self._c = None

    @property
    def client(self):
        if self._c is None:
            self._c = _client()
        return self._c

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot {what} {self.uri}: {_one_line(e)}") from e

    def list(self, under: str = "") -> list[str]:
        """Paths (relative to the prefix) of every object under ``under``."""
        folder = self.key(under).rstrip("/") + "/" if under or self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [o["Key"][cut:] for page in self._call("list", list, pages) for o in page.get("Contents", [])]

    def read(self, rel: str) -> bytes | None:
        """An object's bytes, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot read {self.uri}/{rel}: {_one_line(e)}") from e

    def write(self, rel: str, body: bytes) -> None:
        self._call("write to", self.client.put_object, Bucket=self.bucket, Key=self.key(rel), Body=body)

    def upload(self, rel: str, path: Path) -> None:
        self._call("write to", self.client.upload_file, str(path), self.bucket, self.key(rel))

    def delete(self, rels: list[str]) -> None:
        for i in range(0, len(rels), 1000):  # the API takes at most 1000 keys per call
            objs = [{"Key": self.key(r)} for r in rels[i:i + 1000]]
            if objs:
                self._call("delete from", self.client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": objs, "Quiet": True})
