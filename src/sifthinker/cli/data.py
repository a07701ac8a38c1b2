"""`sifthinker data build|validate`: build SIF records and check them before anything trains on them."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def register(main: click.Group) -> None:
    main.add_command(data)


@click.group()
def data() -> None:
    """Build and validate SIF datasets."""


@data.command("build")
@click.option("--source", type=click.Choice(["synthetic"]), default="synthetic", show_default=True,
              help="Where items come from (synthetic: generated 3D scenes, no download).")
@click.option("--num", type=click.IntRange(min=1), required=True, help="Records to build.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (same seed, same dataset).")
@click.option("--split", type=click.Choice(["train", "eval", "test"]), default="train", show_default=True)
@click.option("--width", type=click.IntRange(min=32), default=320, show_default=True)
@click.option("--height", type=click.IntRange(min=32), default=240, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
def build(source: str, num: int, seed: int, split: str, width: int, height: int, out_dir: Path) -> None:
    """Build NUM records: trajectories, narration, images and depth maps, with a summary of rejections.

    The build is all or nothing: OUT changes only when it completes (an earlier dataset there is replaced).
    """
    from sifthinker.data.build import SOURCES, build_records

    try:
        summary = build_records(SOURCES[source](width=width, height=height), num, seed, out_dir, split=split)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: nothing written to {out_dir}", err=True)
        sys.exit(130)  # the shell's code for SIGINT
    except OSError as e:
        # A path problem is the user's to fix: one line, no traceback.
        reason = f"{e.strerror}: {e.filename!r}" if e.strerror and e.filename else str(e)
        click.echo(f"error: cannot write to {out_dir}: {reason}", err=True)
        sys.exit(1)
    click.echo(summary.format())


@data.command("validate")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--balance-tolerance", type=float, default=0.25, show_default=True,
              help="Each category's share must lie within (1 +- tol) / num_categories.")
def validate(data_dir: Path, balance_tolerance: float) -> None:
    """Run the Great Expectations suite over DATA_DIR/records.json; exit 1 listing failed expectations."""
    from sifthinker.data.checks import check_dataset

    result = check_dataset(data_dir, balance_tolerance=balance_tolerance)
    if result.success:
        click.echo(f"{data_dir}: all expectations passed")
        return
    click.echo(f"{data_dir}: {len(result.failures)} expectation(s) failed:", err=True)
    for line in result.failures:
        click.echo(f"  - {line}", err=True)
    sys.exit(1)
