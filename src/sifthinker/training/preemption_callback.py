"""The trainer callback of :mod:`sifthinker.training.preemption`: SIGTERM -> checkpoint -> exit 75."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sifthinker.training.preemption import PREEMPTED_EXIT_CODE, checkpointed

log = logging.getLogger(__name__)


def _agreed(flag: bool) -> bool:
    """``flag`` OR-ed over all ranks (a no-op outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch

    backend = dist.get_backend()
    t = torch.tensor([1 if flag else 0], device="cuda" if backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class PreemptionCallback(TrainerCallback):
    """SIGTERM -> save at the end of the current step -> :class:`Preempted` (see the module docstring).

    Must come after the CheckpointCallback in the trainer's callbacks, so that the checkpoint is complete
    (state files, marker, upload) before the process leaves.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.requested = False
        self._previous: Any = None
        self._installed = False
        self._saving = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - the signal module's signature
        # Only a flag here: the step under way finishes, and the save happens between steps.
        if not self.requested:
            log.warning("[%s] SIGTERM: finishing this step, then checkpointing and exiting %d",
                        self.stage, PREEMPTED_EXIT_CODE)
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        if threading.current_thread() is not threading.main_thread():
            log.warning("[%s] not in the main thread: SIGTERM is not turned into a checkpoint", self.stage)
            return
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if _agreed(self.requested):
            self.requested = self._saving = True
            control.should_save = True  # transformers saves right after this callback, then calls on_save
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        if not self._saving:
            return
        self._restore()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        err = checkpointed(int(state.global_step), folder)
        print(f"[{self.stage}] {err}", flush=True)
        raise err

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self._restore()  # SIGTERM while the final model is written: the default (the rerun resumes)

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
