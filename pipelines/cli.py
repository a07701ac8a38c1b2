"""`sifthinker pipeline compile|submit|upload`, `run`, `demo`, `cluster-local`: the Kubeflow layer's commands.

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
    main.add_command(cluster_local_cmd)


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
@click.option("--secrets", "secrets_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --runner docker: the contents of the recipe's platform.secrets (YAML: secret name -> key -> "
                   "value; without platform.secrets, the cluster manifests' sifthinker-mlflow and sifthinker-s3). Each "
                   "step's container gets only the keys its services need, as environment, and nothing of this "
                   "process's environment.")
def run(recipe: Path, pipeline_root: Path | None, as_json: bool, runner: str, secrets_file: Path | None) -> None:
    """Run the whole pipeline locally (kfp.local: one subprocess or one container per step); exit 1 when the
    gate fails."""
    from pipelines.run import host_events, run_local, run_pipeline_in_containers
    from sifthinker.runtime.console import StageConsole, watch

    cfg = load_recipe(recipe)
    if secrets_file and runner != "docker":
        raise CLIError("--secrets is for --runner docker (a subprocess run inherits this environment)")
    secrets = _read_secrets(secrets_file) if secrets_file else {}
    with watch(cfg.path("logs"), _log_name("run"), verbose=verbose()) as (console, _, log_path):
        console.line(f"running {cfg.name} locally ({runner}); full log: {log_path}")
        try:
            if runner == "docker":
                root = pipeline_root or cfg.path("pipeline_runs_docker")
                with StageConsole(host_events(root), console):  # the containers' stage lines
                    result = run_pipeline_in_containers(cfg, root, secrets)
            else:
                result = run_local(cfg, pipeline_root=pipeline_root)
        except Exception as e:
            raise CLIError(f"the local run failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r} "
                           f"(details in {log_path})") from e
        console.line(json.dumps(result.to_dict(), indent=1) if as_json else result.summary())
    if result.gate_passed is False:
        sys.exit(1)


def _read_secrets(path: Path) -> dict[str, dict[str, str]]:
    """A --secrets file: secret name -> key -> value (strings), or a clear error."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CLIError(f"--secrets {path}: expected secret name -> key -> value, e.g. "
                       "'sifthinker-mlflow: {tracking-uri: http://127.0.0.1:55000}'")
    return {str(name): {str(k): str(v) for k, v in keys.items()} for name, keys in data.items()}


@click.command("cluster-local")
@click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path), default=Path("recipes/cluster-local.yaml"),
              show_default=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Registry data (when started here), service logs and the pipeline root (default: "
                   "<work_dir>/cluster-local).")
@click.option("--image-registry", default="127.0.0.1:5055/sifthinker", show_default=True,
              help="Where the images are pushed and pulled: a registry on 127.0.0.1 (started unless one answers).")
@click.option("--image-tag", default=None, help="Image tag (default: images/bases.env's IMAGE_TAG).")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build and push the images first (make images PUSH=1; make's BASES, CA_BUNDLE, TORCH_INDEX_URL, "
                   "BUILD_FLAGS apply), or use those already in the registry.")
def cluster_local_cmd(recipe: Path, state_dir: Path | None, image_registry: str, image_tag: str | None,
                      build: bool) -> None:
    """The cluster path on this machine: registry, images, MLflow on PostgreSQL, S3, every pipeline step in its
    own container, the serve container, one question; everything started is torn down."""
    from pipelines.cluster_local import REPO, cluster_local
    from sifthinker.cluster.images import read_env
    from sifthinker.runtime.console import watch

    cfg = load_recipe(recipe)
    tag = image_tag or read_env(REPO / "images" / "bases.env")["IMAGE_TAG"]
    state = (state_dir or cfg.path("cluster-local")).resolve()
    with watch(cfg.path("logs"), _log_name("cluster-local"), verbose=verbose()) as (console, _, log_path):
        console.line(f"SIFThinker on a local container platform, recipe {cfg.name}; full log: {log_path}")
        try:
            cluster_local(cfg, console, state, image_registry, tag, build=build)
        except KeyboardInterrupt:
            console.line("interrupted; what was started is stopped")
            raise SystemExit(130) from None
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CLIError(f"cluster-local failed: {first} (details in {log_path}); what was started is "
                           "stopped") from e


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
