"""Training metrics survive a tracking-server outage: kept, resent in order, and a bound on how long.

An MLflow server restarting during an upgrade must not stop a training run, nor lose what it logged
meanwhile. :class:`MetricsSender` takes each logged step's metrics (stamped with the time they were
logged) and sends them from a thread of its own, oldest first, as MLflow ``log_batch`` calls; what the
server does not take stays queued and is sent again every :data:`RETRY_S` seconds until it does. Training
never waits for the server. A point resent after a reply was lost is not stored twice: MLflow drops a
point equal to one it has (same key, step, timestamp and value).

:class:`TrackingOutageCallback` bounds the outage: once the oldest unsent point is older than
``registry.tracking_outage_s``, the step checkpoints at the end of the current optimizer step (as when
preempted) and fails with one line (:class:`TrackingUnavailable`); the rerun resumes from that checkpoint
and replays the checkpoint's log history into its new MLflow run. At the end of training whatever is
still queued must be sent within what is left of the bound, else the step fails the same way.

MLflow's own HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7 with exponential backoff, and
``MLFLOW_HTTP_REQUEST_TIMEOUT``) apply to each attempt: they delay a resend, never drop it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger(__name__)

RETRY_S = 1.0  # between attempts while the server is away (MLflow's own retries come on top)
_BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics per call


class TrackingUnavailable(RuntimeError):
    """The tracking server took no metrics for longer than ``registry.tracking_outage_s``."""


class MetricsSender:
    """Sends metrics to one MLflow run from a thread, in order, keeping what the server has not taken."""

    def __init__(self, run_id: str, client: Any = None) -> None:
        import mlflow

        self.run_id = run_id
        self.client = client or mlflow.MlflowClient()
        self._queue: collections.deque[tuple[float, Any]] = collections.deque()  # (queued at, Metric)
        self._cond = threading.Condition()
        self._closed = False
        self.sent = 0  # metric points the server took
        self.resent = 0  # of those, points that waited out a failure
        self.failures = 0  # failed attempts
        self._thread = threading.Thread(target=self._run, name="sifthinker-metrics", daemon=True)
        self._thread.start()

    def put(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = time.time()
        with self._cond:
            for k, v in metrics.items():
                self._queue.append((time.monotonic(), Metric(k, float(v), int(now * 1000), int(step))))
            self._cond.notify()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def stale_s(self) -> float:
        """How long the oldest unsent point has waited (0: everything sent)."""
        with self._cond:
            return time.monotonic() - self._queue[0][0] if self._queue else 0.0

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is sent; False if that did not happen within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        down_since = None
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = [m for _, m in list(self._queue)[:_BATCH]]
            try:
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as e:  # noqa: BLE001 - whatever the client raises, the points stay queued
                self.failures += 1
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("MLflow did not take %d metric point(s) (%s); they are kept and sent again",
                                len(batch), " ".join(str(e).split())[:200])
                with self._cond:
                    if self._closed:
                        return
                    self._cond.wait(RETRY_S)
                continue
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self.sent += len(batch)
                self._cond.notify_all()
            if down_since is not None:
                self.resent += len(batch)
                log.warning("MLflow took the %d kept metric point(s) after %.1f s", len(batch),
                            time.monotonic() - down_since)
                down_since = None


class TrackingOutageCallback(TrainerCallback):
    """Past ``bound_s`` without the server taking metrics: checkpoint, then :class:`TrackingUnavailable`.

    Installed on every rank (the decision is collective, as the save is under DeepSpeed), after the
    CheckpointCallback so that the checkpoint is complete before the step fails. ``sender`` is rank 0's
    (None elsewhere).
    """

    def __init__(self, stage: str, sender: MetricsSender | None, bound_s: float, where: str) -> None:
        self.stage, self.sender, self.bound_s, self.where = stage, sender, bound_s, where
        self._failing = False

    def _message(self, stale: float) -> str:
        return (f"the MLflow tracking server at {self.where} has taken no metrics for {stale:.0f} s, longer than "
                f"registry.tracking_outage_s ({self.bound_s:g} s); {self.sender.pending if self.sender else 0} "
                "metric point(s) not sent")

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        from sifthinker.training.preemption_callback import _agreed

        over = self.sender is not None and self.sender.stale_s() > self.bound_s
        if _agreed(over) and not self._failing:
            self._failing = True
            log.warning("[%s] %s: checkpointing", self.stage, self._message(self.sender.stale_s() if over else 0))
            control.should_save = True  # saved right after this callback; then on_save fails the step
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        if not self._failing:
            return
        stale = self.sender.stale_s() if self.sender else 0.0
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        raise TrackingUnavailable(f"{self._message(stale)}: checkpoint at step {state.global_step} written to "
                                  f"{folder}; the rerun resumes from it")

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.sender is None:
            return
        left = max(0.0, self.bound_s - self.sender.stale_s())
        if not self.sender.flush(left):
            raise TrackingUnavailable(f"{self._message(self.sender.stale_s())} at the end of training")
