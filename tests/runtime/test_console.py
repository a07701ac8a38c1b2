"""The local run's console: stage events become one line each; everything else goes to the log file."""

import io
import json
import subprocess
import sys
import textwrap

from sifthinker.names import Env
from sifthinker.runtime import events
from sifthinker.runtime.console import Console, StageConsole


def test_events_are_appended_as_json_lines_and_read_incrementally(tmp_path, monkeypatch):
    path = tmp_path / "ev.jsonl"
    monkeypatch.setenv(Env.EVENTS, str(path))
    events.emit("start", "sft")
    got, offset = events.read_new(path, 0)
    assert [(e["event"], e["stage"]) for e in got] == [("start", "sft")]
    events.emit("done", "sft", summary="loss 2.0 -> 1.0")
    path.open("a").write('{"event": "done", "stage": "half-writ')  # a writer caught mid-line
    got, offset2 = events.read_new(path, offset)
    assert [(e["event"], e["summary"]) for e in got] == [("done", "loss 2.0 -> 1.0")]
    assert events.read_new(path, offset2) == ([], offset2)  # the partial line waits for its end


def test_emit_without_a_listener_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(Env.EVENTS, raising=False)
    monkeypatch.chdir(tmp_path)
    events.emit("start", "sft")
    assert list(tmp_path.iterdir()) == []


def test_progress_is_rate_limited_but_the_last_step_always_shows(tmp_path, monkeypatch):
    path = tmp_path / "ev.jsonl"
    monkeypatch.setenv(Env.EVENTS, str(path))
    for step in range(1, 11):
        events.progress("grpo-sif-test", step, 10)
    got, _ = events.read_new(path, 0)
    assert [e["done"] for e in got] == [1, 10]


def test_stage_console_prints_one_line_per_finished_stage(tmp_path, monkeypatch):
    path = tmp_path / "ev.jsonl"
    monkeypatch.setenv(Env.EVENTS, str(path))
    out = io.StringIO()
    console = StageConsole(path, Console(out))
    events.emit("start", "build-data")
    events.emit("progress", "build-data", done=3, total=10, note="")
    events.emit("done", "build-data", summary="train 10 records (0 rejected)", seconds=2.04)
    events.emit("start", "sft")
    events.emit("failed", "sft", error="ValueError: no trace", seconds=0.5)
    console.poll()
    assert out.getvalue().splitlines() == [
        "  build-data              2.0s  train 10 records (0 rejected)",
        "  sft                     0.5s  FAILED: ValueError: no trace",
    ]
    assert set(console.finished) == {"build-data", "sft"}


def test_watch_sends_noise_to_the_log_and_stage_lines_to_the_terminal(tmp_path):
    """In a real process: prints, warnings and a child process's output land in the log file only."""
    script = textwrap.dedent(f"""
        import subprocess, sys, warnings
        from pathlib import Path
        from sifthinker.runtime import events
        from sifthinker.runtime.console import watch
        with watch(Path({str(tmp_path)!r}) / "logs", "t") as (console, stages, log):
            console.line("visible line")
            print("noise on stdout")
            print("noise on stderr", file=sys.stderr)
            warnings.warn("a third-party warning")
            subprocess.run([sys.executable, "-c", "print('child noise')"], check=True)
            events.emit("start", "gate")
            events.emit("done", "gate", summary="passed: format_validity 0.975 >= 0.8", seconds=1.0)
        print("after", log.name)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["visible line", "  gate                    1.0s  passed: format_validity 0.975 >= 0.8",
                                        "after t.log"]
    assert proc.stderr == ""
    log = (tmp_path / "logs" / "t.log").read_text()
    for noise in ("noise on stdout", "noise on stderr", "a third-party warning", "child noise"):
        assert noise in log
    lines = (tmp_path / "logs" / "t.events.jsonl").read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["start", "done"]
