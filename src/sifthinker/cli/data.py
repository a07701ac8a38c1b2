"""`sifthinker data build|validate|export`: build SIF records, check them, hand them to other trainers."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from sifthinker.cli.common import CLIError, load_recipe, one_line_errors, recipe_option
from sifthinker.cli.signals import Terminated, exit_code, sigterm_interrupts
from sifthinker.config.data_config import BUILD_DEPTH, DATA_SOURCES, NARRATORS


def register(main: click.Group) -> None:
    main.add_command(data)


@click.group()
def data() -> None:
    """Build, validate and export SIF datasets."""


@data.command("build")
@click.option("--source", type=click.Choice(DATA_SOURCES), default="synthetic", show_default=True,
              help="synthetic (generated 3D scenes), sif50k (the released JSON), viscot, tallyqa, or jsonl "
                   "(your own data); see docs/data.md.")
@click.option("--input", "input_", default=None, help="The source's file (a local path or s3://).")
@click.option("--image-root", default=None, help="Folder the source's image paths are relative to (default: "
                                                  "the input's folder; local or s3://).")
@click.option("--out", "out_dir", required=True, help="Dataset folder, or s3://bucket/prefix.")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="Records to build (default: all the source has; required for synthetic).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (same seed, same dataset).")
@click.option("--split", type=click.Choice(["train", "eval", "test"]), default="train", show_default=True)
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="File sources: keep only the train (or, with --split eval, the eval) side of a hashed "
                   "holdout of this share; 0: every item.")
@click.option("--width", type=click.IntRange(min=32), default=None, help="Synthetic image width (default 320).")
@click.option("--height", type=click.IntRange(min=32), default=None, help="Synthetic image height (default 240).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Worker processes (0: one per core; "
                                                                           "default: the recipe's, 1).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, help="Items per shard (default 256).")
@click.option("--depth", type=click.Choice(BUILD_DEPTH), default=None,
              help="gt, dav2 (Depth-Anything-V2), colour (decode <image>_d.png / the record's depth image); "
                   "auto: the source's own choice.")
@click.option("--depth-format", type=click.Choice(["npy", "png16"]), default=None, help="Float map storage.")
@click.option("--narrator", type=click.Choice(NARRATORS), default=None, help="template (offline) or vlm.")
@click.option("--vlm-endpoint", default=None, help="OpenAI-compatible base URL for --narrator vlm.")
@click.option("--vlm-model", default=None, help="Model name for --narrator vlm (default: the first listed).")
@click.option("--viscot-box-frame", type=click.Choice(["pixel", "padded"]), default=None,
              help="viscot: pixel (fixed, D1) or padded (the original's per-axis misreading).")
@click.option("--viscot-max-per-subset", type=click.IntRange(min=1), default=None,
              help="viscot: at most this many items per kept subset (default 10000, the paper's).")
@click.option("--parity", type=click.Choice(["fixed", "original"]), default=None,
              help="original: the original builder's expansion step (D2) and box reading (D1).")
@click.option("--max-rejections", type=click.IntRange(min=0), default=None,
              help="Stop when more items than this are rejected (default: max(20, num)).")
@recipe_option
def build(source: str, input_: str | None, image_root: str | None, out_dir: str, num: int | None, seed: int,
          split: str, holdout: float, width: int | None, height: int | None, workers: int | None, shard_size: int | None,
          depth: str | None, depth_format: str | None, narrator: str | None, vlm_endpoint: str | None,
          vlm_model: str | None, viscot_box_frame: str | None, viscot_max_per_subset: int | None, parity: str | None,
          max_rejections: int | None, recipe: str | None) -> None:
    """Build records: trajectories, narration, images and depth maps, in resumable shards.

    OUT changes only when the build completes (an earlier dataset there is replaced). An interrupted
    build keeps its finished shards: run the same command again to resume.
    """
    from sifthinker.data.build import build as run_build
    from sifthinker.data.options import ALL, options_from_config
    from sifthinker.data.sources import SourceError
    from sifthinker.storage.disk_space import DiskFullError
    from sifthinker.storage.locations import StorageError

    cfg = load_recipe(recipe)
    if source == "synthetic" and num is None:
        raise CLIError("--num is required with --source synthetic (the scenes never run out)")
    if source != "synthetic" and not input_:
        raise CLIError(f"--input is required with --source {source}")
    d = cfg.data
    cfg.parity = parity or cfg.parity
    cache = cfg.path("cache")
    d = replace(d, source=source, sources=[], input=input_, image_root=image_root, num_train=num or ALL,
                seed=seed, width=width or d.width, height=height or d.height, holdout=holdout,
                workers=d.workers if workers is None else workers, shard_size=shard_size or d.shard_size,
                depth=depth or d.depth, depth_format=depth_format or d.depth_format, narrator=narrator or d.narrator,
                vlm=replace(d.vlm, endpoint=vlm_endpoint or d.vlm.endpoint, model=vlm_model or d.vlm.model),
                viscot_box_frame=viscot_box_frame or d.viscot_box_frame,
                viscot_max_per_subset=viscot_max_per_subset or d.viscot_max_per_subset)
    cfg.data = d
    options = options_from_config(cfg, "train", cache_dir=str(cache / "data"))
    side = ("eval" if split == "eval" else "train") if holdout > 0 and source != "synthetic" else "all"
    parts = tuple(replace(p, spec=replace(p.spec, split=side)) for p in options.parts)
    options = replace(options, parts=parts, split=split, max_rejections=max_rejections)
    if narrator == "vlm" and not options.vlm.endpoint:
        raise CLIError("--narrator vlm needs --vlm-endpoint (or data.vlm.endpoint in the recipe)")
    try:
        with sigterm_interrupts(), one_line_errors(StorageError, SourceError, RuntimeError, ValueError, DiskFullError):
            summary = run_build(options, out_dir, staging_root=cache)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (sifthinker.cli.signals)
        click.echo(f"\n{'terminated' if isinstance(e, Terminated) else 'interrupted'}: {out_dir} is unchanged; "
                   "finished shards are kept, run the same command again to resume", err=True)
        sys.exit(exit_code(e))
    click.echo(summary.format())


@data.command("validate")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--balance-tolerance", type=float, default=0.25, show_default=True,
              help="Each category's share must lie within (1 +- tol) / num_categories.")
def validate(data_dir: Path, balance_tolerance: float) -> None:
    """Run the Great Expectations suite over DATA_DIR/records.json; exit 1 listing failed expectations."""
    from sifthinker.data.checks import check_dataset

    if not data_dir.is_dir():  # exit 1 as for failed expectations (click's own check would exit 2)
        click.echo(f"{data_dir}: no such folder (give a dataset folder holding records.json)", err=True)
        sys.exit(1)
    result = check_dataset(data_dir, balance_tolerance=balance_tolerance)
    if result.success:
        click.echo(f"{data_dir}: all expectations passed")
        return
    click.echo(f"{data_dir}: {len(result.failures)} expectation(s) failed:", err=True)
    for line in result.failures:
        click.echo(f"  - {line}", err=True)
    sys.exit(1)


@data.command("export")
@click.option("--format", "fmt", type=click.Choice(["llamafactory"]), default="llamafactory", show_default=True)
@click.option("--name", default=None, help="The dataset's name in dataset_info.json (default: DATA_DIR's folder name).")
@click.option("--copy-images", is_flag=True, help="Copy the images into OUT/images (OUT then stands alone).")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def export(fmt: str, name: str | None, copy_images: bool, data_dir: Path, out_dir: Path) -> None:
    """Write DATA_DIR as LLaMA-Factory sharegpt data in OUT_DIR, with its dataset_info.json entry."""
    from sifthinker.data.export import export_llamafactory

    name = name or data_dir.resolve().name  # users' own data is not SIF-50K

    with one_line_errors(ValueError, KeyError):
        target = export_llamafactory(data_dir, out_dir, name=name, copy_images=copy_images)
    click.echo(f"wrote {target} and its entry {name!r} in {out_dir / 'dataset_info.json'}")
