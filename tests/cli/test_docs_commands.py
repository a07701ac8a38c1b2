"""The `sifthinker model ...` commands the docs show parse as the CLI defines them (a documented command
that fails with a usage error, like `model promote NAME 3` without `--version`, is a doc bug)."""

import re
import shlex
from pathlib import Path

import click
import pytest

from sifthinker.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^\s*(?:\.venv/bin/)?sifthinker (model \S+.*)$")


def documented() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            if m := COMMAND.match(line):
                out.append((f"{doc.name}: {line.strip()}", m.group(1).split("  #")[0].split(" # ")[0].strip()))
    return out


def parse(args: list[str]) -> None:
    """Click's parsing of ``args`` down to the leaf command, without running it (UsageError if wrong)."""
    ctx = main.make_context("sifthinker", list(args))
    cmd: click.Command = main
    while isinstance(cmd, click.Group):
        name, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub


def test_the_docs_show_model_commands():
    assert any("model promote" in cmd for _, cmd in documented())


@pytest.mark.parametrize(("where", "command"), documented(), ids=lambda v: v[:60])
def test_a_documented_model_command_parses(where, command):
    try:
        parse(shlex.split(command))
    except click.UsageError as e:
        pytest.fail(f"{where}: {e.format_message()}")
