"""SIGTERM (a drained node, `kubectl delete pod`, a cancelled run) for the long batch commands.

Python's default SIGTERM action ends the process on the spot, leaving spawned workers behind and
nothing said. Inside :func:`sigterm_interrupts` it raises :class:`Terminated` (a ``KeyboardInterrupt``)
instead, so the command unwinds as on Ctrl-C: worker pools shut down, partial output stays where a rerun
resumes from it, one line says so, and the process exits :data:`TERMINATED_EXIT_CODE`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

TERMINATED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised in the main thread by the handler of :func:`sigterm_interrupts`)."""


def _raise(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal module's signature
    raise Terminated()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def exit_code(e: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 (128 + SIGINT) for Ctrl-C."""
    return TERMINATED_EXIT_CODE if isinstance(e, Terminated) else 130
