"""`sifthinker model promote|rollback|list|resolve`: the MLflow model registry (see `sifthinker.registry.model_versions`).

Every failure is one line ``Error: ...`` with exit status 1; none of these commands creates a store.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import click

from sifthinker.cli.common import CLIError, load_recipe
from sifthinker.registry.model_versions import RegistryError

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
    from sifthinker.registry.model_versions import promote

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
    from sifthinker.registry.rollback import rollback

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

    from sifthinker.registry.logged_models import HEADLINE_METRICS

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
    from sifthinker.registry.model_versions import describe

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
    from sifthinker.registry.model_versions import resolve

    uri = store_uri(recipe, tracking_uri)
    cfg = load_recipe(recipe)  # the cache folder is the recipe's
    with registry_call():
        click.echo(resolve(model_uri, cfg, tracking_uri=uri))


@model.command("pretrain-base")
@click.option("--recipe", required=True, help="Recipe YAML (or name under recipes/), e.g. recipes/tiny-base.yaml.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run folder (checkpoint, MLflow store, corpus); keep it outside git. Rerun to resume.")
@click.option("--init-from", "init_from", default=None, type=click.Path(exists=True, file_okay=False),
              help="A committed base (e.g. models/sif-tiny-base) a new stretch starts from, when OUT has no "
                   "checkpoint.")
@click.option("--stop-after", type=click.IntRange(min=1), default=None,
              help="Stop after this many steps of this call (checkpointed); rerun to go on.")
def pretrain_base_cmd(recipe: str, out: str, init_from: str | None, stop_after: int | None) -> None:
    """Pre-train the tiny base on synthetic scenes (grounding, short answers, copying); resumes OUT."""
    from pathlib import Path

    from sifthinker.model.base_pretrain import pretrain_base

    cfg = load_recipe(recipe)
    if cfg.model.base != "tiny":
        raise CLIError(f"pretrain-base trains the tiny model: the recipe's model.base must be 'tiny', not "
                       f"{cfg.model.base!r}")
    try:
        res = pretrain_base(cfg, Path(out), Path(init_from) if init_from else None, recipe=recipe,
                            stop_after=stop_after)
    except ValueError as e:
        raise CLIError(str(e)) from e
    click.echo(f"pre-trained to step {res['step']} in {out}/checkpoint")


@model.command("export-base")
@click.option("--recipe", required=True, help="The pre-training's recipe (its data and model sections).")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="The pretrain-base run folder (its --out).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="The folder to write (replaced), e.g. models/sif-tiny-base.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default="float16", show_default=True,
              help="Weight dtype of the exported folder.")
@click.option("--probe-items", type=click.IntRange(min=1), default=40, show_default=True,
              help="Held-out probe items per group for the card.")
def export_base_cmd(recipe: str, run_dir: str, out: str, dtype: str, probe_items: int) -> None:
    """Export a pretrain-base checkpoint as a small save_pretrained folder with its model card."""
    from pathlib import Path

    from sifthinker.model.base_card import export_base

    cfg = load_recipe(recipe)
    try:
        card = export_base(Path(run_dir), Path(out), cfg, dtype, probe_items, name=Path(out).name, recipe=recipe)
    except ValueError as e:
        raise CLIError(str(e)) from e
    p = card["probe"]
    click.echo(f"{out}: {card['total_steps']} steps, sha256 {card['sha256']}, grounding Acc@0.5 (3-8 objects) "
               f"{p.get('ground/3-8/acc50', 0):.3f}, short-answer accuracy {p.get('short/acc', 0):.3f}")
