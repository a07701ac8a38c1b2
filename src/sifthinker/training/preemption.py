"""Preemption: SIGTERM during training ends in a checkpoint and a retryable exit, not in lost steps.

A drained node or a reclaimed spot GPU gets SIGTERM, then SIGKILL once the pod's termination grace
period (``platform.termination_grace_seconds``) has passed. :class:`PreemptionCallback`, which the
training runner installs on every rank, turns SIGTERM into: finish the optimizer step under way, save a
checkpoint (the stage's :class:`~sifthinker.training.checkpoints.CheckpointPlan`: marker last, uploaded
when the checkpoint folder is on S3), then leave with :data:`PREEMPTED_EXIT_CODE`. KFP's retry policy
or the TrainJob's restart policy starts the step again, and the rerun resumes from that checkpoint.

Under a distributed launch every rank gets the signal (torchrun forwards it and waits
``--shutdown_timeout`` seconds); the ranks still agree once per step (a max all-reduce of the flag) so
that a rank signalled a moment late takes part in the same, collective, save.

This module holds what the launchers need without torch or transformers (the exit code, torchrun's
shutdown timeout); the callback is in :mod:`sifthinker.training.preemption_callback`.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# EX_TEMPFAIL (sysexits.h): "temporary failure, try again". Any non-zero code makes KFP retry the step and
# the TrainJob's pods restart; this one says that a checkpoint was written and the rerun will resume.
PREEMPTED_EXIT_CODE = 75


# What torchrun reads for how long it waits, after forwarding SIGTERM to its workers, before SIGKILL
# (default 30 s: too short for a 7B checkpoint).
TORCHRUN_SHUTDOWN_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
_MARGIN_S = 15  # torchrun gives up this long before the kubelet does, so that it still reports the exit


def torchrun_shutdown_env(grace_seconds: int) -> dict[str, str]:
    """torchrun's worker shutdown timeout for a pod with ``grace_seconds`` of termination grace."""
    return {TORCHRUN_SHUTDOWN_ENV: str(max(grace_seconds - _MARGIN_S, 1))}


class Preempted(SystemExit):
    """Raised once the preemption checkpoint is written; exits the process with PREEMPTED_EXIT_CODE."""

    def __init__(self, detail: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.detail = detail

    def __str__(self) -> str:
        return f"preempted (SIGTERM): {self.detail}; exit {PREEMPTED_EXIT_CODE}, the rerun resumes from it"


def checkpointed(step: int, checkpoint: Path) -> Preempted:
    return Preempted(f"checkpoint at step {step} written to {checkpoint}")


@contextlib.contextmanager
def forwarding_sigterm(proc: subprocess.Popen) -> Iterator[list[bool]]:
    """While the block runs, SIGTERM to this process goes on to ``proc`` (torchrun, which passes it to
    every rank); yields a one-element list that turns True once a SIGTERM came."""
    got = [False]

    def forward(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
        got[0] = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
