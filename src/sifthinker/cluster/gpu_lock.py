"""The training image's lock: ``images/constraints-gpu.txt``, CI's pins where vLLM allows them.

``constraints.txt`` pins what CI is green with on CPU. The training image adds vLLM (the ``gpu`` extra),
which pins its own torch and caps some of CI's pins (vLLM 0.31.0 wants ``transformers<5.18``,
``fastapi<0.137``, ...), so CI's file cannot be installed there as it is: the first build of the image
failed on exactly that. :func:`lock_gpu` resolves ``.[train,platform,gpu]`` with pip's resolver
(``pip install --dry-run --report``) against CI's pins minus torch and the CUDA wheels, drops each pin
that pip names in a conflict (and only those), and writes every resolved version. The file's header names
each dropped pin with the version it resolved to instead, so a reader (and ``tests/images``) can see
exactly where the image differs from what CI tested.

``make lock-gpu`` rewrites it; run it when ``constraints.txt``, ``pyproject.toml`` or the vLLM pin change.
The resolution is for this interpreter's platform: run it on Linux x86_64 with Python 3.11, as the image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["GpuLockError", "UNPINNED", "canonical", "lock_gpu", "read_pins", "read_replaced"]

# Pins the training image never takes from CI's file: vLLM's own torch build and its CUDA wheels.
UNPINNED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*)$")
EXTRAS = "train,platform,gpu"
_CONFLICT = re.compile(r"The user requested \(constraint\) ([A-Za-z0-9_.-]+)==")
_REPLACED = re.compile(r"^# replaced: ([a-z0-9-]+)==(\S+) -> (\S+)$")


class GpuLockError(RuntimeError):
    """pip could not resolve the training image's requirements even without the conflicting pins."""


def canonical(name: str) -> str:
    """PEP 503's normalised name (``huggingface_hub`` and ``huggingface-hub`` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: str | Path) -> dict[str, str]:
    """``NAME==VERSION`` lines of a constraints file, by canonical name."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def read_replaced(path: str | Path) -> dict[str, tuple[str, str]]:
    """The header's ``# replaced: NAME==CI -> IMAGE`` lines: CI's version and the image's, by name."""
    out: dict[str, tuple[str, str]] = {}
    for line in Path(path).read_text().splitlines():
        m = _REPLACED.match(line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def _index_only_env() -> dict[str, str]:
    """The environment for pip with only the package index: a machine's own wheel folders (find-links, a
    local extra index) and global constraints would resolve what the image cannot install (a local
    ``torch+cpu`` satisfies vLLM's ``torch==X``; the image gets PyPI's CUDA build). So no pip config file
    is read, except the CA bundle it names (a TLS-intercepting proxy's, as the image builds' CA_BUNDLE)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_INDEX_URL")}
    if "PIP_CERT" not in env:
        cert = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"],
                              capture_output=True, text=True).stdout.strip()
        if cert:
            env["PIP_CERT"] = cert
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _resolve(project: Path, pins: dict[str, str]) -> tuple[dict[str, str] | None, str]:
    """pip's resolution of the project's extras under ``pins``: (name -> version, or None; pip's output)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfile, report = Path(tmp) / "c.txt", Path(tmp) / "report.json"
        cfile.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                               "--report", str(report), "-c", str(cfile), f".[{EXTRAS}]"],
                              cwd=project, capture_output=True, text=True, env=_index_only_env())
        if proc.returncode != 0:
            return None, proc.stdout + proc.stderr
        items = json.loads(report.read_text())["install"]
        return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in items}, ""


def lock_gpu(project: str | Path = ".", out: str | Path | None = None, max_rounds: int = 30) -> Path:
    """Resolve the training image's packages and write ``images/constraints-gpu.txt`` (or ``out``)."""
    project = Path(project).resolve()
    ci = read_pins(project / "constraints.txt")
    pins = {n: v for n, v in ci.items() if not UNPINNED.match(n)}
    dropped: list[str] = []
    for _ in range(max_rounds):
        resolved, output = _resolve(project, pins)
        if resolved is not None:
            break
        names = [canonical(n) for n in _CONFLICT.findall(output)]
        names = [n for n in dict.fromkeys(names) if n in pins]
        if not names:
            tail = "\n".join(line for line in output.splitlines() if not line.startswith("WARNING: Location"))[-3000:]
            raise GpuLockError(f"pip cannot resolve .[{EXTRAS}] and names no pin of constraints.txt to drop:\n{tail}")
        for n in names:
            pins.pop(n)
            dropped.append(n)
    else:
        raise GpuLockError(f"no resolution after dropping {max_rounds} rounds of pins: {', '.join(dropped)}")
    resolved.pop("sifthinker", None)
    head = ["# The training image's lock (images/Dockerfile.train), written by `make lock-gpu`",
            "# (sifthinker.cluster.gpu_lock): constraints.txt's pins except torch and the CUDA wheels (vLLM's",
            f"# own build), resolved with pip for .[{EXTRAS}] on Linux x86_64, Python 3.11. Where vLLM",
            "# conflicts with a CI pin, the image takes the version below; every other shared pin is CI's."]
    head += [f"# replaced: {n}=={ci[n]} -> {resolved.get(n, 'absent')}" for n in sorted(dropped)]
    body = [f"{n}=={v}" for n, v in sorted(resolved.items())]
    path = Path(out) if out else project / "images" / "constraints-gpu.txt"
    path.write_text("\n".join(head + body) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m sifthinker.cluster.gpu_lock [--out FILE]`` (``make lock-gpu``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m sifthinker.cluster.gpu_lock", description=main.__doc__)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        path = lock_gpu(".", args.out)
    except GpuLockError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    replaced = read_replaced(path)
    print(f"wrote {path}: {len(read_pins(path))} pins, {len(replaced)} differ from constraints.txt: "
          + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(replaced.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
