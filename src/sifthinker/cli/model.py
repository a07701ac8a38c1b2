"""`sifthinker model promote|rollback|list|resolve`: the MLflow model registry (see `sifthinker.registry`).

Every failure is one line ``Error: ...`` with exit status 1; none of these commands creates a store.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import click

from sifthinker.cli.common import CLIError, load_recipe
from sifthinker.registry import RegistryError

# MLflow retries a failing tracking server (5xx, timeouts) for minutes; a person waiting on a command
# should hear about it in seconds. A value the user exported wins.
_FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def register(main: click.Group) -> None:
    main.add_command(model)


@contextlib.contextmanager
def registry_call() -> Iterator[None]:
    """Run a registry call with MLflow's HTTP retries cut short; a RegistryError becomes one CLI line."""
    added = [k for k in _FAIL_FAST_HTTP if k not in os.environ]
    os.environ.update({k: _FAIL_FAST_HTTP[k] for k in added})
    try:
        yield
    except RegistryError as e:
        raise CLIError(" ".join(str(e).split())) from e
    finally:  # restored: in tests (CliRunner) the process goes on
        for k in added:
            os.environ.pop(k, None)


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
@click.option("--version", "version", type=click.IntRange(min=1), required=True,
              help="Model version (a positive integer) to point the alias at.")
@click.option("--alias", default="champion", show_default=True)
@tracking_options
def promote_cmd(name: str, version: int, alias: str, recipe: str | None, tracking_uri: str | None) -> None:
    """Point ALIAS of model NAME at VERSION (the previous holder is recorded in tags)."""
    from sifthinker.registry import promote

    uri = store_uri(recipe, tracking_uri)
    with registry_call():
        res = promote(uri, name, version, alias)
    prev = res["previous"] or "none"
    click.echo(f"{name}@{alias}: version {prev} -> {res['version']}")


@model.command("rollback")
@click.argument("name")
@click.option("--alias", default="champion", show_default=True)
@tracking_options
def rollback_cmd(name: str, alias: str, recipe: str | None, tracking_uri: str | None) -> None:
    """Point ALIAS of model NAME back at the version that held it before the last promotion.

    Running it again changes nothing; to go back further, promote the version you want.
    """
    from sifthinker.rollback import rollback

    uri = store_uri(recipe, tracking_uri)
    with registry_call():
        res = rollback(uri, name, alias)
    if res["changed"]:
        click.echo(f"{name}@{alias}: version {res['from']} -> {res['to']} (rolled back)")
    else:
        click.echo(f"{name}@{alias}: already rolled back from version {res['from']} to {res['to']}; nothing to do")


def version_table(d: dict) -> str:
    """``model list``'s table: one row per version, its aliases, the headline metrics, when it was created
    (``--json`` has every metric)."""
    from datetime import datetime

    from sifthinker.logged_models import HEADLINE_METRICS

    heads = [m.split("/", 1)[1] for m in HEADLINE_METRICS]  # sif-bench's, bare as version_metrics gives them
    rows = [["version", "aliases", *heads, "created"]]
    for v in reversed(d["versions"]):  # newest first
        created = datetime.fromtimestamp(v["created"] / 1000).strftime("%Y-%m-%d %H:%M") if v["created"] else "-"
        rows.append([str(v["version"]), ",".join(v["aliases"]) or "-",
                     *(f"{v['metrics'][m]:.3f}" if m in v["metrics"] else "-" for m in heads), created])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return f"{d['name']}: {len(d['versions'])} version(s)\n" + "\n".join(lines)


@model.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
@tracking_options
def list_cmd(name: str, as_json: bool, recipe: str | None, tracking_uri: str | None) -> None:
    """List the versions and aliases of model NAME."""
    from sifthinker.registry import describe

    uri = store_uri(recipe, tracking_uri)
    with registry_call():
        d = describe(name, uri)
    if as_json:
        click.echo(json.dumps(d, indent=2, sort_keys=True))
        return
    click.echo(version_table(d))


@model.command("resolve")
@click.argument("model_uri")
@tracking_options
def resolve_cmd(model_uri: str, recipe: str | None, tracking_uri: str | None) -> None:
    """Download MODEL_URI (models:/NAME@alias or models:/NAME/V) to the local cache and print its folder."""
    from sifthinker.registry import resolve

    uri = store_uri(recipe, tracking_uri)
    cfg = load_recipe(recipe)  # the cache folder is the recipe's
    with registry_call():
        click.echo(resolve(model_uri, cfg, tracking_uri=uri))
