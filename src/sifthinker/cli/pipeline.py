"""`sifthinker pipeline compile|submit` and `sifthinker run`: the Kubeflow pipeline from a recipe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

_recipe = click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
                       help="Recipe YAML (recipes/*.yaml).")


def register(main: click.Group) -> None:
    main.add_command(pipeline)
    main.add_command(run)


def _load(recipe: Path):
    from sifthinker.config import ConfigError, RunConfig

    try:
        return RunConfig.load(recipe)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--recipe") from e


@click.group()
def pipeline() -> None:
    """Compile the SIFThinker Kubeflow pipeline or submit it to a KFP server."""


@pipeline.command("compile")
@_recipe
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the compiled pipeline (KFP IR YAML).")
def compile_cmd(recipe: Path, output: Path) -> None:
    """Compile the pipeline for RECIPE; the recipe rides along as the `recipe` parameter's default."""
    from sifthinker.orchestration import compile_pipeline

    cfg = _load(recipe)
    path = compile_pipeline(cfg, output)
    click.echo(f"compiled pipeline for recipe {cfg.name} to {path}")


@pipeline.command("submit")
@_recipe
@click.option("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080 (a port-forward).")
@click.option("--experiment", default=None, help="KFP experiment (default: the recipe's registry.experiment).")
@click.option("--run-name", default=None, help="Run name (default: <recipe>-<timestamp>).")
@click.option("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs).")
@click.option("--apply-deployment", is_flag=True, help="Let the deploy step apply the InferenceService.")
@click.option("--package", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Submit this compiled YAML instead of compiling RECIPE now.")
def submit(recipe: Path, host: str, experiment: str | None, run_name: str | None, namespace: str | None,
           apply_deployment: bool, package: Path | None) -> None:
    """Compile the pipeline for RECIPE and start a run on the KFP server at --host."""
    from sifthinker.orchestration import submit_pipeline

    cfg = _load(recipe)
    out = submit_pipeline(cfg, host, experiment=experiment, run_name=run_name, namespace=namespace,
                          arguments={"apply_deployment": apply_deployment}, package_path=package)
    click.echo(f"submitted run {out['run_id']}: {out['url']}")


@click.command()
@_recipe
@click.option("--pipeline-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the local run's artifacts go (default: <work_dir>/pipeline_runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def run(recipe: Path, pipeline_root: Path | None, as_json: bool) -> None:
    """Run the whole pipeline locally (kfp.local, one subprocess per step); exit 1 when the gate fails."""
    from sifthinker.orchestration import run_local

    result = run_local(_load(recipe), pipeline_root=pipeline_root)
    click.echo(json.dumps(result.to_dict(), indent=1) if as_json else result.summary())
    if result.gate_passed is False:
        sys.exit(1)
