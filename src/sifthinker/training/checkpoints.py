"""Checkpoints of a training stage: where they go, what they carry, and resuming from the latest one.

Every ``save_steps`` steps the trainer writes ``checkpoint-N`` (model or adapter, optimizer, scheduler,
RNG states, step counter and log history: transformers' own checkpoint), then
:class:`CheckpointCallback` adds the stage's state files (GRPO: a consistent copy of the progress
store) and a marker written last; with an ``s3://`` checkpoint folder it uploads the checkpoint, marker
last, and prunes old ones. A checkpoint without its marker (a run killed while saving) is never used.

A stage run's checkpoints live in ``<checkpoint_dir>/<stage>-<key>``: the key hashes what defines the
run (stage, data, starting model, output folder, the stage's recipe section, the model section, parity,
step cap), so running the same stage again, after a crash or a SIGKILL, finds them and resumes, while a
different run never picks up another's. After a successful run they are deleted: the saved model is the
result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sifthinker.rewards.progress import restore_sqlite, snapshot_sqlite
from sifthinker.storage import remote
from sifthinker.storage.locations import is_s3

log = logging.getLogger(__name__)

MARKER = "sifthinker-checkpoint.json"
_CKPT_RE = re.compile(r"checkpoint-(\d+)")


def run_key(stage: str, parts: Mapping[str, Any]) -> str:
    """``<stage>-<12 hex digits>`` from everything that defines a stage run (JSON, sorted keys)."""
    blob = json.dumps({k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in parts.items()},
                      sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _step(name: str) -> int | None:
    m = _CKPT_RE.fullmatch(name)
    return int(m.group(1)) if m else None


@dataclass
class CheckpointPlan:
    """Checkpointing of one stage run (see the module docstring)."""

    every: int  # save every this many steps; 0: only when preempted (sifthinker.training.preemption)
    limit: int  # checkpoints kept
    local_dir: Path  # the trainer's output_dir: where checkpoint-N folders are written
    remote: str | None = None  # s3://.../<stage>-<key> when the checkpoint folder is on S3
    state_files: dict[str, Path] = field(default_factory=dict)  # name in the checkpoint -> live SQLite file

    @classmethod
    def for_run(cls, root: str, work_dir: Path, key: str, every: int, limit: int,
                state_files: Mapping[str, Path]) -> CheckpointPlan:
        if is_s3(root):  # written locally by the trainer, then uploaded
            return cls(every, limit, work_dir / ".checkpoint-cache" / key, f"{root.rstrip('/')}/{key}",
                       dict(state_files))
        base = Path(root) if Path(root).is_absolute() else work_dir / root
        return cls(every, limit, base / key, None, dict(state_files))

    def trainer_args(self) -> dict[str, Any]:
        if not self.every:  # the preemption callback still asks for a save (control.should_save)
            return {"save_total_limit": self.limit}
        return {"save_strategy": "steps", "save_steps": self.every, "save_total_limit": self.limit}

    # -- resuming ---------------------------------------------------------------------------------------
    def latest_local(self) -> Path | None:
        """The newest complete checkpoint folder on this machine, or None."""
        done = [(s, p) for p in self.local_dir.glob("checkpoint-*")
                if (s := _step(p.name)) is not None and (p / MARKER).is_file()]
        return max(done)[1] if done else None

    def fetch(self) -> Path | None:
        """The newest complete checkpoint, downloaded from S3 when that is where the newest is.

        Incomplete local checkpoints (a run killed while saving) are removed first, so that the trainer
        never rotates or overwrites around them.
        """
        for p in self.local_dir.glob("checkpoint-*"):
            if p.is_dir() and not (p / MARKER).is_file():
                shutil.rmtree(p, ignore_errors=True)
        local = self.latest_local()
        if self.remote is None:
            return local
        names = [n for n in remote.list_folders(self.remote) if _step(n) is not None]
        done = [n for n in sorted(names, key=_step, reverse=True) if remote.object_exists(f"{self.remote}/{n}/{MARKER}")]
        if not done or (local is not None and _step(local.name) >= _step(done[0])):  # type: ignore[operator]
            return local
        target = self.local_dir / done[0]
        shutil.rmtree(target, ignore_errors=True)
        log.info("downloading %s/%s", self.remote, done[0])
        return remote.download_folder(f"{self.remote}/{done[0]}", target)

    def restore_state(self, checkpoint: Path) -> None:
        """Put the checkpoint's copies of the state files back (before anything opens them)."""
        for name, live in self.state_files.items():
            if (checkpoint / name).is_file():
                restore_sqlite(checkpoint / name, live)
                log.info("restored %s from %s", live, checkpoint)

    # -- saving -----------------------------------------------------------------------------------------
    def complete(self, checkpoint: Path, step: int) -> None:
        """Add state copies and the marker to a checkpoint the trainer just wrote; upload it; prune S3."""
        for name, live in self.state_files.items():
            if Path(live).is_file():
                snapshot_sqlite(live, checkpoint / name)
        (checkpoint / MARKER).write_text(json.dumps({"step": step, "saved_at": time.time(),
                                                     "state_files": sorted(self.state_files)}))
        if self.remote is None:
            return
        remote.upload_folder(checkpoint, f"{self.remote}/{checkpoint.name}", last=MARKER)
        names = sorted((n for n in remote.list_folders(self.remote) if _step(n) is not None), key=_step)
        done = [n for n in names if n == checkpoint.name or remote.object_exists(f"{self.remote}/{n}/{MARKER}")]
        keep = set(done[-self.limit:])
        # Older complete ones beyond the limit, and uploads cut short before the newest: never resumed from.
        for old in (n for n in names if n not in keep and _step(n) < step):  # type: ignore[operator]
            remote.delete_prefix(f"{self.remote}/{old}")

    def finish(self) -> None:
        """Delete the run's checkpoints after a successful run (locally and on S3)."""
        shutil.rmtree(self.local_dir, ignore_errors=True)
        if self.remote is not None:
            remote.delete_prefix(self.remote)


class CheckpointCallback(TrainerCallback):
    """Completes each checkpoint the trainer saves (rank 0): state copies, marker, upload."""

    def __init__(self, plan: CheckpointPlan) -> None:
        self.plan = plan

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.plan.complete(folder, state.global_step)
