"""What a person sees while a local run works: one line per stage, one live progress line, a log file.

:func:`watch` wraps a local run. Unless ``verbose``, everything the run writes to stdout and stderr
(its own subprocesses, third-party warnings and progress bars included) goes to a log file, at the file
descriptor level so child processes follow; the console shows only what :class:`StageConsole` prints
from the stages' :mod:`sifthinker.runtime.events`::

      build-data              9.1s  160 train records (0 rejected), 40 eval records (0 rejected)
      sft                    82.4s  loss 2.314 -> 0.419, 320 steps

On a terminal the stage in progress keeps one line that is rewritten in place; elsewhere (CI logs,
pipes) a progress line is printed at most once a minute.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sifthinker.names import Env
from sifthinker.runtime import events

__all__ = ["Console", "StageConsole", "watch"]

_POLL_S = 0.5
_HEARTBEAT_S = 60.0


class Console:
    """Writes to the terminal the run started on, even while stdout and stderr go to a log file."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.tty = stream.isatty()
        self._live = False
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self.stream.flush()

    def live(self, text: str) -> None:
        """A line rewritten in place on a terminal (printed as a plain line elsewhere)."""
        with self._lock:
            if self.tty:
                width = 120
                self.stream.write("\r\x1b[K" + text[:width])
                self._live = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def _clear(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[K")
            self._live = False


@dataclass
class _Running:
    started: float
    progress: dict[str, Any] = field(default_factory=dict)
    shown: float = 0.0


class StageConsole:
    """Follows an events file on a thread and prints each stage's line (see the module docstring)."""

    def __init__(self, path: Path, console: Console):
        self.path, self.console = path, console
        self.finished: dict[str, dict[str, Any]] = {}  # stage -> its done/failed event
        self._offset = 0
        self._running: dict[str, _Running] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stage-console", daemon=True)

    def __enter__(self) -> StageConsole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # the last events, written just before the run returned

    def _loop(self) -> None:
        while not self._stop.wait(_POLL_S):
            self.poll()

    def poll(self) -> None:
        new, self._offset = events.read_new(self.path, self._offset)
        for ev in new:
            self.handle(ev)
        self._show_live()

    def handle(self, ev: dict[str, Any]) -> None:
        stage, kind = str(ev.get("stage", "?")), ev.get("event")
        if kind == "start":
            self._running[stage] = _Running(started=time.monotonic())
        elif kind == "progress" and stage in self._running:
            self._running[stage].progress = ev
        elif kind in ("done", "failed"):
            self._running.pop(stage, None)
            self.finished[stage] = ev
            secs = float(ev.get("seconds") or 0.0)
            if kind == "done":
                text = ev.get("summary") or "done"
            else:
                text = f"FAILED: {ev.get('error', '')}"
            self.console.line(f"  {stage:<20}{secs:>7.1f}s  {text}")

    def _show_live(self) -> None:
        if not self._running:
            return
        stage, run = next(iter(self._running.items()))
        now = time.monotonic()
        if not self.console.tty and now - (run.shown or run.started) < _HEARTBEAT_S:
            return
        run.shown = now
        p = run.progress
        step = ""
        if p.get("done") is not None:
            step = f"[{p['done']}/{p['total']}] " if p.get("total") else f"[{p['done']}] "
        note = f"{p.get('note', '')} " if p.get("note") else ""
        self.console.live(f"  {stage:<20}{now - run.started:>7.0f}s  {step}{note}...")


@contextlib.contextmanager
def watch(log_dir: Path, name: str, verbose: bool = False) -> Iterator[tuple[Console, StageConsole, Path]]:
    """Run the body with stage lines on the console and everything else in ``<log_dir>/<name>.log``.

    Yields the console (for the caller's own lines), the stage console (its ``finished`` events) and the
    log path. ``verbose`` leaves stdout and stderr alone and still prints the stage lines.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    events_path = log_dir / f"{name}.events.jsonl"
    events_path.unlink(missing_ok=True)
    old_events = os.environ.get(Env.EVENTS)
    os.environ[Env.EVENTS] = str(events_path)
    try:
        if verbose:
            with StageConsole(events_path, Console(sys.stdout)) as stages:
                yield stages.console, stages, log_path
        else:
            with _to_log(log_path) as term, StageConsole(events_path, Console(term)) as stages:
                yield stages.console, stages, log_path
    finally:
        if old_events is None:
            os.environ.pop(Env.EVENTS, None)
        else:
            os.environ[Env.EVENTS] = old_events


@contextlib.contextmanager
def _to_log(log_path: Path) -> Iterator[IO[str]]:
    """Point file descriptors 1 and 2 at ``log_path``; yields a stream to the original stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    term = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        with open(log_path, "ab", buffering=0) as logf:
            os.dup2(logf.fileno(), 1)
            os.dup2(logf.fileno(), 2)
            try:
                yield term
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
        term.close()
