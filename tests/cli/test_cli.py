"""The console script: every command has --help; the data journey works through the CLI."""

import json

import click
import pytest
from click.testing import CliRunner

from sifthinker.cli import main
from sifthinker.method import trace


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", list(_commands(main)), ids=" ".join)
def test_every_command_has_help(path):
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_expected_commands_exist():
    names = {" ".join(p) for p in _commands(main)}
    assert {"data build", "data validate", "demo"} <= names


def test_data_build_then_validate(tmp_path):
    out = tmp_path / "d"
    res = CliRunner().invoke(main, ["data", "build", "--source", "synthetic", "--num", "30", "--seed", "0",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "built 30 train records" in res.output and "rejected:" in res.output
    res = CliRunner().invoke(main, ["data", "validate", str(out)])
    assert res.exit_code == 0, res.output
    assert "all expectations passed" in res.output

    # corrupt one trace: validation fails and names the expectation
    records = json.loads((out / "records.json").read_text())
    records[0]["messages"][1]["content"] = records[0]["messages"][1]["content"].replace("</think>", "")
    (out / "records.json").write_text(json.dumps(records))
    res = CliRunner().invoke(main, ["data", "validate", str(out)])
    assert res.exit_code == 1
    assert records[0]["id"] in res.output
    assert trace.validate(records[0]["messages"][1]["content"])


def test_data_validate_of_a_missing_folder_exits_1_saying_so(tmp_path):
    res = CliRunner().invoke(main, ["data", "validate", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no such folder" in res.output
