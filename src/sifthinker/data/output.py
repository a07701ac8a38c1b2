"""Where a build goes: a local folder or an ``s3://`` prefix, both resumable shard by shard.

Local: shards are built in a hidden sibling ``.<name>.partial`` (holding ``build.json``, the build's
fingerprint); a rerun with the same fingerprint keeps its finished shards, another fingerprint starts it
afresh. When every shard is done the top-level files are written and the folder is renamed onto the
target in one step, so the target changes only when a build completes (an earlier dataset there is
replaced whole; a folder that is not a dataset is never touched).

S3: shards are built in a local staging folder and uploaded as each finishes (its ``shard.json`` last:
an uploaded ``shard.json`` marks a finished shard); a rerun, on any machine, skips them. ``records.json``
is uploaded last of all, so a reader never sees a dataset before it is complete. A prefix that holds
another build (or other objects) is refused, never overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sifthinker.data.record import SHARD_FILE
from sifthinker.storage.locations import S3Prefix, StorageError, is_s3

BUILD_FILE = "build.json"
RECORDS_FILE = "records.json"
MANIFEST_FILE = "manifest.json"
REJECTIONS_FILE = "rejections.jsonl"


def _dump(fp: dict) -> bytes:
    return (json.dumps(fp, indent=1, sort_keys=True) + "\n").encode()


class LocalOutput:
    def __init__(self, target: str | Path):
        out = Path(target)
        self.display = str(out)
        self.target = out.resolve() if out.is_symlink() else out  # a link: the data goes where it points
        self.root = self.target.parent / f".{self.target.name}.partial"
        self.uploader = None

    def prepare(self, fingerprint: dict) -> set[str]:
        """Check the target, keep a resumable partial build with this fingerprint, return its finished shards."""
        _check_target(self.target)
        if self.target.parent.exists() and not self.target.parent.is_dir():  # mkdir would say "File exists"
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.target.parent))
        state = self.root / BUILD_FILE
        if self.root.exists() and (not state.is_file() or state.read_bytes() != _dump(fingerprint)):
            shutil.rmtree(self.root)  # an interrupted build of something else: start afresh
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        state.write_bytes(_dump(fingerprint))
        done = set()
        for p in (self.root / "shards").iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)  # a shard a killed process left half-written
            elif (p / SHARD_FILE).is_file():
                done.add(p.name)
        return done

    def load_shard(self, name: str) -> dict:
        return json.loads((self.root / "shards" / name / SHARD_FILE).read_text())

    def finish(self, top: dict[str, bytes], keep: set[str], drop: list[str]) -> None:
        for p in (self.root / "shards").iterdir():
            if p.name not in keep:
                shutil.rmtree(p)
        for rel in drop:
            (self.root / rel).unlink(missing_ok=True)
        for name, body in top.items():  # records.json comes last in `top`
            (self.root / name).write_bytes(body)
        _publish(self.root, self.target)


class S3Uploader:
    """Uploads a finished shard from a worker process (picklable: it carries only the URI)."""

    def __init__(self, uri: str):
        self.uri = uri

    def commit(self, root: Path, name: str) -> None:
        folder = root / "shards" / name
        dest = S3Prefix(self.uri)
        files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != SHARD_FILE]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: dest.upload(f"shards/{name}/{p.relative_to(folder).as_posix()}", p), files))
        dest.upload(f"shards/{name}/{SHARD_FILE}", folder / SHARD_FILE)  # last: it marks the shard finished
        for p in files:
            p.unlink()  # keep only shard.json locally: the staging folder stays small


class S3Output:
    def __init__(self, uri: str, staging_root: str | Path):
        self.display = uri.rstrip("/")
        self.dest = S3Prefix(self.display)
        self.root = Path(staging_root) / "s3-builds" / hashlib.sha256(self.display.encode()).hexdigest()[:16]
        self.uploader = S3Uploader(self.display)

    def prepare(self, fingerprint: dict) -> set[str]:
        existing = self.dest.read(BUILD_FILE)
        if existing is not None and existing != _dump(fingerprint):
            raise StorageError(f"{self.display} holds another build (its {BUILD_FILE} differs); "
                               "choose another prefix or delete it")
        keys = self.dest.list()
        if existing is None and keys:
            raise StorageError(f"{self.display} is not empty and holds no SIF build; refusing to write into it")
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "shards").mkdir(parents=True)
        self.dest.write(BUILD_FILE, _dump(fingerprint))
        return {k.split("/")[1] for k in keys if k.startswith("shards/") and k.endswith(f"/{SHARD_FILE}")}

    def load_shard(self, name: str) -> dict:
        local = self.root / "shards" / name / SHARD_FILE
        body = local.read_bytes() if local.is_file() else self.dest.read(f"shards/{name}/{SHARD_FILE}")
        if body is None:
            raise StorageError(f"{self.display}: shard {name} has no {SHARD_FILE}")
        return json.loads(body)

    def finish(self, top: dict[str, bytes], keep: set[str], drop: list[str]) -> None:
        stale = [k for k in self.dest.list("shards") if k.split("/")[1] not in keep]
        self.dest.delete(stale + list(drop))
        for name, body in top.items():  # records.json comes last in `top`: readers see complete datasets only
            self.dest.write(name, body)
        shutil.rmtree(self.root, ignore_errors=True)


def make_output(target: str | Path, staging_root: str | Path) -> LocalOutput | S3Output:
    return S3Output(str(target), staging_root) if is_s3(target) else LocalOutput(target)


def _check_target(out_dir: Path) -> None:
    """Refuse targets a build must not replace, before any work: a file, or a folder of other things."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (
        (out_dir / RECORDS_FILE).is_file() or (out_dir / MANIFEST_FILE).is_file()
    ):
        # The target is replaced whole: never delete a folder that is not an earlier dataset.
        raise FileExistsError(f"{out_dir} is not empty and holds no SIF dataset ({RECORDS_FILE}); "
                              "refusing to replace it")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished build ``tmp`` to ``out_dir``; an earlier dataset there is swapped out, then deleted."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    if not any(out_dir.iterdir()):
        try:
            os.replace(tmp, out_dir)  # POSIX renames over an empty folder atomically; same final path
        except OSError:  # e.g. the empty folder is a mount point: move the finished files in instead
            for child in tmp.iterdir():
                child.rename(out_dir / child.name)
            tmp.rmdir()
        return
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    out_dir.rename(old)  # from here to the next line the old dataset is still complete, under `old`
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
