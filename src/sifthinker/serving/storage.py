"""Model folders from object storage: ``s3://bucket/prefix`` downloaded once into a local cache.

(``models:/`` URIs and local folders are :func:`sifthinker.registry.model_versions.resolve`'s.) The client, its endpoint
(MinIO, moto) and credentials are :mod:`sifthinker.storage.s3_endpoint`'s, as for every other S3 reader. A download goes to a temporary folder renamed into place when complete, so an interrupted one is
never served.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

_COMPLETE = ".sifthinker-complete"


class StorageError(RuntimeError):
    pass


def fetch_s3(uri: str, cache_dir: str | Path) -> Path:
    """The folder ``s3://bucket/prefix`` as a local folder under ``cache_dir`` (downloaded on first use)."""
    from botocore.exceptions import BotoCoreError, ClientError

    u = urlparse(uri)
    bucket, prefix = u.netloc, u.path.strip("/")
    if u.scheme != "s3" or not bucket:
        raise StorageError(f"not an s3:// URI: {uri!r}")
    target = Path(cache_dir) / "s3" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    if (target / _COMPLETE).is_file():
        return target
    from sifthinker.storage import s3_endpoint

    s3 = s3_endpoint.client()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".s3-", dir=target.parent))
    try:
        n = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):].lstrip("/")
                if not rel or rel.endswith("/") or ".." in Path(rel).parts:
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(tmp / rel))
                n += 1
        if n == 0:
            raise StorageError(f"{uri} holds no files")
        (tmp / _COMPLETE).write_text(uri)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"cannot download {uri}: {' '.join(str(e).split())[:300]}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
