"""`sifthinker pipeline compile|submit|upload`, `sifthinker run`, `sifthinker demo`: the Kubeflow layer's commands.

They plug into the library's CLI through the ``sifthinker.commands`` entry point (pyproject.toml), so the
library never imports this layer.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click

from sifthinker.cli.common import CLIError, load_recipe, one_line_errors, verbose

_recipe = click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path), required=True,
                       help="Recipe YAML (recipes/*.yaml).")


def register(main: click.Group) -> None:
    main.add_command(pipeline)
    main.add_command(run)
    main.add_command(demo)


def _log_name(prefix: str) -> str:
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@click.group()
def pipeline() -> None:
    """Compile the SIFThinker Kubeflow pipeline, submit it to a KFP server or upload it there."""


@pipeline.command("compile")
@_recipe
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the compiled pipeline (KFP IR YAML).")
def compile_cmd(recipe: Path, output: Path) -> None:
    """Compile the pipeline for RECIPE; the recipe rides along as the `recipe` parameter's default."""
    from pipelines.run import compile_pipeline

    cfg = load_recipe(recipe)
    with one_line_errors():
        path = compile_pipeline(cfg, output)
    click.echo(f"compiled pipeline for recipe {cfg.name} to {path}")


def _server_options(f):
    """--host, --namespace and --kube-context: where the KFP API is and whose it is."""
    f = click.option("--kube-context", default=None,
                     help="Kube context to find the KFP API and credentials through when there is no host.")(f)
    f = click.option("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs).")(f)
    return click.option("--host", default=None, envvar="KF_PIPELINES_ENDPOINT", show_envvar=True,
                        help="KFP API endpoint, e.g. http://localhost:8080 (a port-forward); default: found "
                             "through the kube context. Credentials: docs/cluster.md, 'Submit'.")(f)


@contextlib.contextmanager
def _kfp_call(host: str | None, what: str) -> Iterator[None]:
    """The KFP client raises many kinds (HTTP, auth, connection): one line saying which."""
    from pipelines.submit import ParameterError

    try:
        yield
    except ParameterError as e:
        raise CLIError(str(e)) from e
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CLIError(f"could not {what} {host or '(the kube context)'}: {type(e).__name__}: {first}") from e


@pipeline.command("submit")
@_recipe
@_server_options
@click.option("--experiment", default=None, help="KFP experiment (default: the recipe's registry.experiment).")
@click.option("--run-name", default=None, help="Run name (default: <recipe>-<timestamp>).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A run parameter, typed by the pipeline's definition (repeatable): -p apply_deployment=true, "
                   "-p recipe=@other.yaml.")
@click.option("--apply-deployment", is_flag=True, help="Let the deploy step apply the InferenceService.")
@click.option("--service-account", default=None,
              help="Service account of the run's pods (default: the recipe's platform.service_account).")
@click.option("--package", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Submit this compiled YAML instead of compiling RECIPE now.")
def submit(recipe: Path, host: str | None, namespace: str | None, kube_context: str | None, experiment: str | None,
           run_name: str | None, params: tuple[str, ...], apply_deployment: bool, service_account: str | None,
           package: Path | None) -> None:
    """Compile the pipeline for RECIPE and start a run on a Kubeflow Pipelines server."""
    from pipelines.submit import submit_pipeline

    cfg = load_recipe(recipe)
    with _kfp_call(host, "submit to"):
        out = submit_pipeline(cfg, host, experiment=experiment, run_name=run_name, namespace=namespace,
                              arguments={"apply_deployment": apply_deployment}, params=params,
                              package_path=package, service_account=service_account, kube_context=kube_context)
    click.echo(f"submitted run {out['run_id']} (experiment {out['experiment']}): {out['url']}")


@pipeline.command("upload")
@_recipe
@_server_options
@click.option("--name", default=None, help="Pipeline name (default: sifthinker-<recipe name>).")
@click.option("--version", "version", default=None, help="Version name (default: <recipe>-<timestamp>).")
@click.option("--description", default=None, help="Description shown in the KFP UI.")
@click.option("--package", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Upload this compiled YAML instead of compiling RECIPE now.")
def upload(recipe: Path, host: str | None, namespace: str | None, kube_context: str | None, name: str | None,
           version: str | None, description: str | None, package: Path | None) -> None:
    """Upload the pipeline for RECIPE as a new pipeline version (the pipeline is created on first upload)."""
    from pipelines.submit import upload_pipeline

    cfg = load_recipe(recipe)
    with _kfp_call(host, "upload to"):
        out = upload_pipeline(cfg, host, name=name, version=version, description=description, namespace=namespace,
                              package_path=package, kube_context=kube_context)
    click.echo(f"uploaded pipeline {out['name']} version {out['version']} ({out['version_id']}): {out['url']}")


@click.command()
@_recipe
@click.option("--pipeline-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the local run's artifacts go (default: <work_dir>/pipeline_runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--runner", type=click.Choice(["subprocess", "docker"]), default="subprocess", show_default=True,
              help="subprocess: each step in this Python environment; docker: each step in the image the recipe's "
                   "platform section names, as uid 1000, through kfp's DockerRunner (a Docker engine needed).")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="With --runner docker: environment of every step (MLflow and S3 endpoints, credentials), "
                   "as a cluster's secrets would deliver it. Repeatable.")
def run(recipe: Path, pipeline_root: Path | None, as_json: bool, runner: str, envs: tuple[str, ...]) -> None:
    """Run the whole pipeline locally (kfp.local: one subprocess or one container per step); exit 1 when the
    gate fails."""
    from pipelines.run import run_local, run_pipeline_in_containers
    from sifthinker.runtime.console import watch

    cfg = load_recipe(recipe)
    bad = [e for e in envs if "=" not in e or not e.split("=", 1)[0]]
    if bad:
        raise CLIError(f"--env takes KEY=VALUE, got {bad[0]!r}")
    if envs and runner != "docker":
        raise CLIError("--env is for --runner docker (a subprocess run inherits this environment)")
    with watch(cfg.path("logs"), _log_name("run"), verbose=verbose()) as (console, _, log_path):
        console.line(f"running {cfg.name} locally ({runner}); full log: {log_path}")
        try:
            if runner == "docker":
                root = pipeline_root or cfg.path("pipeline_runs_docker")
                result = run_pipeline_in_containers(cfg, root, dict(e.split("=", 1) for e in envs))
            else:
                result = run_local(cfg, pipeline_root=pipeline_root)
        except Exception as e:
            raise CLIError(f"the local run failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r} "
                           f"(details in {log_path})") from e
        console.line(json.dumps(result.to_dict(), indent=1) if as_json else result.summary())
    if result.gate_passed is False:
        sys.exit(1)


@click.command()
@click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path), default=Path("recipes/local.yaml"),
              show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port for the demo server (default: a free one).")
def demo(recipe: Path, port: int | None) -> None:
    """Run the pipeline locally, promote, serve, ask one question, draw the focus boxes.

    The console shows one line per stage and a summary; everything else goes to a log file under the
    work directory (`sifthinker -v demo` shows everything).
    """
    from pipelines.run import run_local
    from sifthinker.cli.demo import run_demo
    from sifthinker.runtime.console import watch

    cfg = load_recipe(recipe)
    with watch(cfg.path("logs"), _log_name("demo"), verbose=verbose()) as (console, _, log_path):
        try:
            code = run_demo(recipe, run_local, console, port=port, log_path=log_path)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CLIError(f"the demo failed: {first} (details in {log_path})") from e
    sys.exit(code)
