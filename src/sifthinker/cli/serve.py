"""`sifthinker serve` (the KServe model server, or the SIF transformer in front of a predictor) and
`sifthinker deploy` (the InferenceService)."""

from __future__ import annotations

from pathlib import Path

import click

from sifthinker.cli.common import CLIError, load_recipe, one_line_errors, recipe_option


def register(main: click.Group) -> None:
    main.add_command(serve)
    main.add_command(deploy)


@click.command()
@click.option("--model", "model_uri", default=None,
              help="models:/NAME@alias, models:/NAME/VERSION, s3://bucket/prefix or a local model folder.")
@recipe_option
@click.option("--tracking-uri", default=None, help="MLflow tracking URI for models:/ URIs (overrides the recipe's).")
@click.option("--port", "--http_port", "port", type=click.IntRange(1, 65535), default=None,
              help="HTTP port (default: serving.port, 8080).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 in a container).")
@click.option("--name", "--model_name", "name", default=None,
              help="Served model name (default: serving.name).")
@click.option("--alias", "aliases", multiple=True,
              help="A further name clients may use (repeatable; the registered name and URI are added by themselves).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Default generation length (default: serving.max_new_tokens).")
@click.option("--predictor-host", "--predictor_host", "predictor_host", default=None,
              help="Run as the SIF transformer in front of this OpenAI-compatible predictor (host[:port] or URL; "
                   "KServe passes it to transformers) instead of loading a model.")
@click.option("--predictor-model", default=None, help="The model name the predictor serves (default: --name).")
def serve(model_uri: str | None, recipe: str | None, tracking_uri: str | None, port: int | None, host: str,
          name: str | None, aliases: tuple[str, ...], max_new_tokens: int | None, predictor_host: str | None,
          predictor_model: str | None) -> None:
    """Serve a model: OpenAI chat at /openai/v1/chat/completions (plain and streamed), V2 inference at
    /v2/models/NAME/infer, V1 at /v1/models/NAME:predict, metrics at /metrics.

    Concurrent requests are generated together (serving.max_batch_size, serving.max_batch_wait_ms); the
    hard limits are the recipe's serving section (docs/serving.md).
    """
    from sifthinker.registry.model_versions import RegistryError, parse_models_uri

    cfg = load_recipe(recipe)
    names = list(aliases)
    if model_uri and model_uri.startswith("models:/"):
        # a client may name the model by the registered name or the URI it was served from
        with one_line_errors(RegistryError):
            names += [parse_models_uri(model_uri)[0], model_uri]
    if predictor_host:
        model_dir = None
        url = predictor_host if "://" in predictor_host else f"http://{predictor_host}"
    elif not model_uri:
        raise CLIError("give --model (a model to load) or --predictor-host (a predictor to stand in front of)")
    else:
        url = None
        model_dir = _model_folder(model_uri, cfg, tracking_uri)
    from sifthinker.serving.server import serve as run_server

    run_server(model_dir, cfg, name=name, port=port, host=host, max_new_tokens=max_new_tokens,
               aliases=tuple(names), predictor_url=url, predictor_model=predictor_model)


def _model_folder(model_uri: str, cfg, tracking_uri: str | None) -> Path:
    from sifthinker.model.loading import check_model_folder
    from sifthinker.registry.model_versions import RegistryError, default_cache_dir, resolve
    from sifthinker.serving.storage import StorageError, fetch_s3

    with one_line_errors(RegistryError, StorageError, ValueError):
        if model_uri.startswith("s3://"):
            return check_model_folder(fetch_s3(model_uri, default_cache_dir(cfg)))
        return check_model_folder(resolve(model_uri, cfg, tracking_uri=tracking_uri))


def _one_line(e: BaseException) -> str:
    """An error as one line: a ValidationError's violations joined by '; ', other messages unwrapped."""
    from sifthinker.cluster.crds import ValidationError

    if isinstance(e, ValidationError):
        return f"{e.what}: {'; '.join(e.violations)}"
    return " ".join(str(e).split()) or type(e).__name__


@click.command()
@click.option("--model", "model", required=True,
              help="A registered model NAME (with --alias), models:/NAME@alias, models:/NAME/VERSION or s3://...")
@click.option("--alias", default=None, help="With a bare NAME: the alias to deploy (default: champion).")
@click.option("--recipe", default=None, help="Recipe YAML or name (serving, registry and platform settings).")
@click.option("--runtime", type=click.Choice(["native", "vllm"]), default=None,
              help="native: the sifthinker predictor; vllm: KServe's Hugging Face runtime (vLLM backend) behind "
                   "the SIF transformer (default: serving.runtime).")
@click.option("--canary", type=click.IntRange(1, 100), default=None,
              help="Send this percentage of traffic to the new version (KServe canaryTrafficPercent); the "
                   "running version keeps the rest.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the manifest (default: <work>/deploy).")
@click.option("--apply", is_flag=True,
              help="Create or patch the InferenceService with the Kubernetes client (a server-side dry run "
                   "first), then wait until it is Ready and print its URL.")
@click.option("--dry-run", is_flag=True, help="Print the manifest and how it was validated; write and apply nothing.")
def deploy(model: str, alias: str | None, recipe: str | None, runtime: str | None, canary: int | None,
           out_dir: Path | None, apply: bool, dry_run: bool) -> None:
    """Render, validate and write (and with --apply, apply) the KServe InferenceService for a model version.

    The manifest goes to stdout; the last line on stderr says how it was validated (KServe's typed models,
    the CRD schema in $CRD_DIR when set, the cluster with --apply).
    """
    import yaml

    from sifthinker.cluster.crds import UnknownKindError, ValidationError
    from sifthinker.registry.model_versions import RegistryError
    from sifthinker.serving.deploy import DeployError, model_uri_for
    from sifthinker.serving.deploy import deploy as do_deploy

    if dry_run and (apply or out_dir):
        raise CLIError("--dry-run writes and applies nothing: drop --apply / --out")
    cfg = load_recipe(recipe)  # a bad recipe is a CLIError already
    try:
        uri = model_uri_for(model, alias)
        result = do_deploy(cfg, uri, apply=apply, out_dir=out_dir, dry_run=dry_run, canary=canary, runtime=runtime)
    # OSError: CRD_DIR naming a missing folder, an unwritable --out
    except (DeployError, RegistryError, ValidationError, UnknownKindError, OSError) as e:
        raise CLIError(_one_line(e)) from e
    click.echo(yaml.safe_dump(result.manifest, sort_keys=False), nl=False)
    if result.path:
        click.echo(f"wrote {result.path}", err=True)
    if result.applied:
        md = result.manifest["metadata"]
        click.echo(f"{result.action} {md['name']} in namespace {md['namespace']}; ready at {result.url}", err=True)
    click.echo(result.validation, err=True)
