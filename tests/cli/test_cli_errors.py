"""Every CLI error a user can make is one clear line (exit 1, no traceback), and nothing is half-written."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from sifthinker.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, list[str]]:
    res = CliRunner().invoke(main, list(args))
    lines = [line for line in res.output.splitlines() if line.strip()]
    return res.exit_code, lines


def assert_one_line_error(code: int, lines: list[str], *words: str) -> None:
    assert code == 1, lines
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("kind", ["malformed", "negative", "unknown", "missing"])
@pytest.mark.parametrize("command", [
    ("pipeline", "compile", "-o", "{tmp}/p.yaml"),
    ("run",),
    ("serve", "--model", "{tmp}"),
    ("deploy", "--model", "s3://b/m", "--dry-run"),
], ids=lambda c: " ".join(c[:2]))
def test_a_bad_recipe_is_one_line_for_every_command(command, kind, bad_recipes, tmp_path):
    recipe, word = bad_recipes[kind]
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, lines = run(*args, "--recipe", str(recipe))
    assert_one_line_error(code, lines, word)
    assert not (tmp_path / "p.yaml").exists()  # nothing compiled from a recipe that did not load


def test_serve_refuses_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    code, lines = run("serve", "--model", str(tmp_path), "--recipe", str(ROOT / "recipes" / "local.yaml"))
    assert_one_line_error(code, lines, "is not a model folder", "config.json", "model weights")


def test_serve_refuses_a_missing_path(tmp_path):
    code, lines = run("serve", "--model", str(tmp_path / "gone"), "--recipe", str(ROOT / "recipes" / "local.yaml"))
    assert_one_line_error(code, lines, "gone")


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(monkeypatch):
    """The catch-all: a bug deep in a command still reads as one line; `-v` re-raises it."""
    import click

    @click.command("explode")
    def explode():
        raise KeyError("deep\ninside")

    monkeypatch.setitem(main.commands, "explode", explode)
    code, lines = run("explode")
    assert_one_line_error(code, lines, "KeyError", "deep", "sifthinker -v")
    res = CliRunner().invoke(main, ["-v", "explode"])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)  # the real exception, for its traceback


def test_run_secrets_are_a_mapping_and_only_for_containers(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("just-a-string\n")
    for args, words in ((("--runner", "docker"), ("--secrets", "secret name -> key -> value")),
                        ((), ("--secrets is for --runner docker",))):
        code, lines = run("run", "--recipe", str(ROOT / "recipes" / "local.yaml"), *args, "--secrets", str(secrets))
        assert_one_line_error(code, lines, *words)


def test_a_container_run_refuses_paths_of_this_machine(tmp_path):
    """recipes/local.yaml reads the V* fixture from the checkout, which no step container sees (nothing of
    the machine is mounted, as on a cluster): the run stops before starting any container."""
    code, lines = run("run", "--recipe", str(ROOT / "recipes" / "local.yaml"), "--runner", "docker",
                      "--pipeline-root", str(tmp_path / "root"))
    assert_one_line_error(code, lines, "cannot read these paths", "benchmarks/vstar")
    assert not (tmp_path / "root").exists()
