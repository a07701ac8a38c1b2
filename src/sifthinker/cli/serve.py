"""`sifthinker serve` (KServe model server with V2 + OpenAI routes) and `sifthinker deploy` (InferenceService)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

RECIPE_ENV = "SIFTHINKER_RECIPE_YAML"  # the recipe as YAML text (set by the rendered InferenceService)


def register(main: click.Group) -> None:
    main.add_command(serve)
    main.add_command(deploy)


def _config(recipe: str | None):
    from sifthinker.cli.model import load_recipe
    from sifthinker.config import RunConfig

    if recipe is None and os.environ.get(RECIPE_ENV):
        import yaml

        return RunConfig.from_dict(yaml.safe_load(os.environ[RECIPE_ENV]) or {})
    return load_recipe(recipe)


@click.command()
@click.option("--model", "model_uri", required=True,
              help="models:/NAME@alias, models:/NAME/VERSION or a local model folder.")
@click.option("--recipe", default=None, help=f"Recipe YAML or name (default: ${RECIPE_ENV}, else built-in defaults).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI for models:/ URIs (overrides the recipe's).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="HTTP port (default: serving.port, 8080).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 in a container).")
@click.option("--name", default=None, help="Served model name (default: serving.name).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Default generation length (default: serving.max_new_tokens).")
def serve(model_uri: str, recipe: str | None, tracking_uri: str | None, port: int | None, host: str,
          name: str | None, max_new_tokens: int | None) -> None:
    """Serve a model: V2 inference at /v2/models/NAME/infer and OpenAI chat at /openai/v1/chat/completions.

    One request is one generation (requests are answered one at a time; no batching yet).
    """
    from sifthinker.registry import RegistryError, parse_models_uri, resolve

    cfg = _config(recipe)
    try:
        model_dir = resolve(model_uri, cfg, tracking_uri=tracking_uri)
    except RegistryError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    from sifthinker.serving.server import serve as run_server

    # a client may name the model by the served name, the registered name or the URI it was served from
    aliases = (parse_models_uri(model_uri)[0], model_uri) if model_uri.startswith("models:/") else ()
    run_server(model_dir, cfg, name=name, port=port, host=host, max_new_tokens=max_new_tokens, aliases=aliases)


@click.command()
@click.option("--model", "model_uri", required=True, help="models:/NAME@alias, models:/NAME/VERSION or s3://...")
@click.option("--recipe", default=None, help="Recipe YAML or name (serving, registry and platform settings).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the manifest (default: <work>/deploy).")
@click.option("--apply", is_flag=True, help="kubectl apply the manifest (create or patch).")
def deploy(model_uri: str, recipe: str | None, out_dir: Path | None, apply: bool) -> None:
    """Render, validate and write (and with --apply, apply) the KServe InferenceService for a model version."""
    import yaml

    from sifthinker.k8s import ValidationError
    from sifthinker.registry import RegistryError
    from sifthinker.serving.deploy import DeployError
    from sifthinker.serving.deploy import deploy as do_deploy

    cfg = _config(recipe)
    try:
        manifest = do_deploy(cfg, model_uri, apply=apply, out_dir=out_dir)
    except (DeployError, RegistryError, ValidationError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(yaml.safe_dump(manifest, sort_keys=False))
