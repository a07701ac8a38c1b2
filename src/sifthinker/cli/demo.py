"""`sifthinker demo`: the local end-to-end journey behind `make demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def register(main: click.Group) -> None:
    main.add_command(demo)


@click.command()
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("recipes/local.yaml"), show_default=True)
@click.option("--port", type=int, default=None, help="Port for the demo server (default: a free one).")
def demo(recipe: Path, port: int | None) -> None:
    """Run the pipeline locally, promote, serve, ask one question, draw the focus boxes."""
    from sifthinker.demo import run_demo

    sys.exit(run_demo(recipe, port))
