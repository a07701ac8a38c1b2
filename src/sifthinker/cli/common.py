"""What every command shares: loading a recipe, and turning expected failures into one-line errors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import click

from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.names import Env


class CLIError(click.ClickException):
    """A failure the user can act on: printed as one line ``Error: ...``, exit status 1."""

    exit_code = 1


def verbose(ctx: click.Context | None = None) -> bool:
    """Whether ``sifthinker -v`` was given (for commands that decide what goes to the console)."""
    ctx = ctx or click.get_current_context()
    return bool((ctx.find_root().obj or {}).get("verbose"))


@contextlib.contextmanager
def one_line_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Re-raise the listed exception kinds (and OSError) as :class:`CLIError` with their message."""
    try:
        yield
    except (*kinds, OSError) as e:
        raise CLIError(str(e).strip() or type(e).__name__) from e


def load_recipe(recipe: str | Path | None) -> RunConfig:
    """A RunConfig from a recipe path or a name under ./recipes (``local``).

    Without one: ``$SIFTHINKER_RECIPE_YAML`` (what a deployed server gets), else the built-in defaults.
    """
    if recipe is None:
        if text := os.environ.get(Env.RECIPE_YAML):
            from sifthinker.runtime.stages import stage_config

            with one_line_errors(ConfigError):
                return stage_config(text)
        return RunConfig()
    p = Path(recipe)
    if not p.exists() and not p.suffix and (Path("recipes") / f"{recipe}.yaml").is_file():
        p = Path("recipes") / f"{recipe}.yaml"
    with one_line_errors(ConfigError):
        return RunConfig.load(p)


recipe_option = click.option("--recipe", default=None,
                             help=f"Recipe YAML, or a name under recipes/ (default: ${Env.RECIPE_YAML.value}, "
                                  "else built-in defaults).")
