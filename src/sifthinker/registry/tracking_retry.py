"""A training step's last calls to the MLflow server (final metrics, the model upload), retried with backoff.

When the tracking server has a bad minute just as a step has finished training, failing the step would
throw the training away (its checkpoints are deleted once the model is saved). Each call is retried with
exponential backoff (1 s doubling to 30 s) for up to ``registry.tracking_outage_s``; then the step fails
with one line. Uploads are idempotent (the same files to the same paths), as are metrics resent with
their original timestamps, so a retry never leaves a different result than one attempt would. MLflow's
own HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) run inside each attempt.

A refusal that a retry cannot change (a 4xx other than 408/429: a bad request, no permission, no such
run) and a local problem (a missing file) are raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_S, MAX_S = 1.0, 30.0


class TrackingRetryError(RuntimeError):
    """A call to the tracking server still failed once the retry budget was spent."""


def _permanent(e: BaseException) -> bool:
    if isinstance(e, FileNotFoundError | IsADirectoryError | NotADirectoryError | TypeError):  # local, or a bug
        return True
    status = getattr(e, "get_http_status_code", lambda: None)()  # MlflowException
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def retrying(what: str, fn: Callable[[], T], budget_s: float, sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``; on a transient error retried with backoff for up to ``budget_s`` seconds (module docstring)."""
    delay, t0, attempts = FIRST_S, time.monotonic(), 0
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as e:
            if _permanent(e):
                raise
            waited = time.monotonic() - t0
            brief = " ".join(str(e).split())[:200]
            if waited + delay > budget_s:
                raise TrackingRetryError(f"{what} failed {attempts} time(s) over {waited:.0f} s (retried for up to "
                                         f"registry.tracking_outage_s = {budget_s:g} s): {brief}") from e
            log.warning("%s: %s; retrying in %.0f s (%.0f s of %g s spent)", what, brief, delay, waited, budget_s)
            sleep(delay)
            delay = min(delay * 2, MAX_S)
