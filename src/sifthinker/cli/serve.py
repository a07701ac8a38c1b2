"""`sifthinker serve` (KServe model server with V2 + OpenAI routes) and `sifthinker deploy` (InferenceService)."""

from __future__ import annotations

from pathlib import Path

import click

from sifthinker.cli.common import CLIError, load_recipe, one_line_errors, recipe_option


def register(main: click.Group) -> None:
    main.add_command(serve)
    main.add_command(deploy)


@click.command()
@click.option("--model", "model_uri", required=True,
              help="models:/NAME@alias, models:/NAME/VERSION or a local model folder.")
@recipe_option
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
    from sifthinker.model.loading import check_model_folder
    from sifthinker.registry import RegistryError, parse_models_uri, resolve

    cfg = load_recipe(recipe)
    with one_line_errors(RegistryError, ValueError):
        model_dir = check_model_folder(resolve(model_uri, cfg, tracking_uri=tracking_uri))
    from sifthinker.serving.server import serve as run_server

    # a client may name the model by the served name, the registered name or the URI it was served from
    aliases = (parse_models_uri(model_uri)[0], model_uri) if model_uri.startswith("models:/") else ()
    run_server(model_dir, cfg, name=name, port=port, host=host, max_new_tokens=max_new_tokens, aliases=aliases)


def _one_line(e: BaseException) -> str:
    """An error as one line: a ValidationError's violations joined by '; ', other messages unwrapped."""
    from sifthinker.k8s import ValidationError

    if isinstance(e, ValidationError):
        return f"{e.what}: {'; '.join(e.violations)}"
    return " ".join(str(e).split()) or type(e).__name__


@click.command()
@click.option("--model", "model_uri", required=True, help="models:/NAME@alias, models:/NAME/VERSION or s3://...")
@click.option("--recipe", default=None, help="Recipe YAML or name (serving, registry and platform settings).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the manifest (default: <work>/deploy).")
@click.option("--apply", is_flag=True,
              help="Apply the manifest: kubectl apply --dry-run=server first (the cluster validates), then apply.")
@click.option("--dry-run", is_flag=True, help="Print the manifest and how it was validated; write and apply nothing.")
def deploy(model_uri: str, recipe: str | None, out_dir: Path | None, apply: bool, dry_run: bool) -> None:
    """Render, validate and write (and with --apply, apply) the KServe InferenceService for a model version.

    The manifest goes to stdout; the last line on stderr says how it was validated (KServe's typed models,
    the CRD schema in $CRD_DIR when set, the cluster with --apply).
    """
    import yaml

    from sifthinker.k8s import UnknownKindError, ValidationError
    from sifthinker.registry import RegistryError
    from sifthinker.serving.deploy import DeployError
    from sifthinker.serving.deploy import deploy as do_deploy

    if dry_run and (apply or out_dir):
        raise CLIError("--dry-run writes and applies nothing: drop --apply / --out")
    cfg = load_recipe(recipe)  # a bad recipe is a CLIError already
    try:
        result = do_deploy(cfg, model_uri, apply=apply, out_dir=out_dir, dry_run=dry_run)
    # OSError: CRD_DIR naming a missing folder, an unwritable --out
    except (DeployError, RegistryError, ValidationError, UnknownKindError, OSError) as e:
        raise CLIError(_one_line(e)) from e
    click.echo(yaml.safe_dump(result.manifest, sort_keys=False), nl=False)
    if result.path:
        click.echo(f"wrote {result.path}", err=True)
    if result.applied:
        md = result.manifest["metadata"]
        click.echo(f"applied {md['name']} in namespace {md['namespace']}", err=True)
    click.echo(result.validation, err=True)
