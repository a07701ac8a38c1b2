"""docs/cluster.md, the cluster runbook, against the code: every `sifthinker ...` command in it parses with the
CLI's own parser (commands, options, required options, choices and types), the runbook walks the whole
journey, and the files and manifests it names exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from sifthinker.cli import main

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "cluster.md"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)


def commands(text: str, program: str = "sifthinker") -> list[str]:
    """Every `program ...` command line of the runbook's shell blocks, continuation lines joined."""
    out = []
    for block in shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(program + " "):
                out.append(line)
    return out


def _words(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    return words[: words.index("|")] if "|" in words else words


def parse(line: str) -> tuple[list[str], click.Context]:
    """Resolve the subcommand path of a `sifthinker ...` line and parse its arguments with click.

    Files named by options need not exist here (the runbook's outputs and your own files)."""
    args = _words(line)[1:]
    cmd: click.Command = main
    path = []
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), args[0])
        assert sub is not None, f"{line}: no command {' '.join([*path, args[0]])!r}"
        path.append(args.pop(0))
        cmd = sub
    exists = [(p.type, p.type.exists) for p in cmd.params if isinstance(p.type, click.Path) and p.type.exists]
    try:
        for t, _ in exists:
            t.exists = False
        ctx = cmd.make_context(" ".join(["sifthinker", *path]), list(args), resilient_parsing=False)
    except click.UsageError as e:
        raise AssertionError(f"{line}: {e.format_message()}") from e
    finally:
        for t, flag in exists:
            t.exists = flag
    return path, ctx


def test_every_sifthinker_command_in_the_runbook_parses():
    lines = commands(RUNBOOK.read_text())
    assert len(lines) >= 10
    for line in lines:
        parse(line)


def test_the_runbook_walks_the_whole_journey():
    used = {" ".join(parse(line)[0]) for line in commands(RUNBOOK.read_text())}
    assert {"pipeline compile", "pipeline upload", "pipeline submit", "model list", "model promote",
            "deploy"} <= used
    text = RUNBOOK.read_text()
    for heading in ("Prerequisites", "secrets", "images", "Apply the manifests", "Compile, upload and submit",
                    "Watch", "Review in MLflow", "Promote", "Deploy", "Call the endpoint", "Roll back", "Sizing",
                    "Troubleshooting"):
        assert re.search(rf"^## \d+\. .*{heading}", text, re.M | re.I), heading
    for failure in ("Coordinate frames", "Rewards stuck at zero", "Rollout out of memory", "Storage credentials"):
        assert f"**{failure}." in text, failure
    assert "from openai import OpenAI" in text and "curl -s http://localhost:8080/openai/v1/chat/completions" in text


def test_a_wrong_command_is_caught():
    """The checker itself fails on an unknown option, a missing required one and a bad type."""
    for bad in ("sifthinker pipeline submit --recipe r.yaml --hots http://x",
                "sifthinker model promote sifthinker --tracking-uri http://x",
                "sifthinker model promote sifthinker --version three",
                "sifthinker pipelin compile --recipe r.yaml -o x.yaml"):
        with pytest.raises(AssertionError):
            parse(bad)


def test_the_files_and_overlays_the_runbook_names_exist():
    text = RUNBOOK.read_text()
    for rel in set(re.findall(r"(?<![\w/])((?:recipes|manifests|images|docs|pipelines)/[\w./-]+[\w/])", text)):
        assert (REPO / rel).exists(), rel
    for block in shell_blocks(text):
        for overlay in re.findall(r"kubectl apply -k (\S+)", block):
            assert (REPO / overlay / "kustomization.yaml").is_file(), overlay
    assert "make manifests" in text and "make images" in text
