"""`sifthinker model promote|list|resolve`: the MLflow model registry (see `sifthinker.registry`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def register(main: click.Group) -> None:
    main.add_command(model)


def load_recipe(recipe: str | None):
    """A RunConfig from a recipe path, or a recipe name under ./recipes (``local``); defaults without one."""
    from sifthinker.config import RunConfig

    if recipe is None:
        return RunConfig()
    p = Path(recipe)
    if not p.exists() and not p.suffix and (Path("recipes") / f"{recipe}.yaml").is_file():
        p = Path("recipes") / f"{recipe}.yaml"
    return RunConfig.load(p)


def tracking_options(f):
    f = click.option("--tracking-uri", default=None, help="MLflow tracking URI (overrides the recipe's).")(f)
    f = click.option("--recipe", default=None, help="Recipe YAML (or name under recipes/) giving the tracking URI.")(f)
    return f


def store_uri(recipe: str | None, uri: str | None) -> str:
    if recipe and uri:
        raise click.UsageError("give --recipe or --tracking-uri, not both")
    return uri or load_recipe(recipe).tracking_uri


@click.group()
def model() -> None:
    """Registered model versions and their aliases (MLflow registry)."""


@model.command("promote")
@click.argument("name")
@click.option("--version", "version", required=True, help="Model version to point the alias at.")
@click.option("--alias", default="champion", show_default=True)
@tracking_options
def promote_cmd(name: str, version: str, alias: str, recipe: str | None, tracking_uri: str | None) -> None:
    """Point ALIAS of model NAME at VERSION (the previous holder is recorded in tags)."""
    from sifthinker.registry import RegistryError, promote

    try:
        res = promote(store_uri(recipe, tracking_uri), name, version, alias)
    except RegistryError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    prev = res["previous"] or "none"
    click.echo(f"{name}@{alias}: version {prev} -> {res['version']}")


@model.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
@tracking_options
def list_cmd(name: str, as_json: bool, recipe: str | None, tracking_uri: str | None) -> None:
    """List the versions and aliases of model NAME."""
    from sifthinker.registry import RegistryError, describe

    try:
        d = describe(name, store_uri(recipe, tracking_uri))
    except RegistryError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(d, indent=2, sort_keys=True))
        return
    click.echo(f"{d['name']}  aliases: " + (", ".join(f"{a}={v}" for a, v in sorted(d["aliases"].items())) or "none"))
    for v in d["versions"]:
        metrics = {k.removeprefix("metric."): val for k, val in v["tags"].items() if k.startswith("metric.")}
        shown = " ".join(f"{k}={val}" for k, val in sorted(metrics.items()))
        aliases = ",".join(v["aliases"])
        click.echo(f"  v{v['version']:<4} {v['status']:<8} {aliases:<20} run={v['run_id']} {shown}")


@model.command("resolve")
@click.argument("model_uri")
@tracking_options
def resolve_cmd(model_uri: str, recipe: str | None, tracking_uri: str | None) -> None:
    """Download MODEL_URI (models:/NAME@alias or models:/NAME/V) to the local cache and print its folder."""
    from sifthinker.registry import RegistryError, resolve

    cfg = load_recipe(recipe)
    try:
        click.echo(resolve(model_uri, cfg, tracking_uri=store_uri(recipe, tracking_uri)))
    except RegistryError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
