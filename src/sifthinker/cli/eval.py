"""`sifthinker eval run` (a model or an OpenAI-compatible endpoint on one benchmark) and `sifthinker eval
score` (a predictions JSONL made anywhere)."""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path
from typing import Any

import click

from sifthinker.cli.common import CLIError, load_recipe, one_line_errors, recipe_option
from sifthinker.cli.signals import Terminated, exit_code, sigterm_interrupts
from sifthinker.names import BENCHMARKS


def register(main: click.Group) -> None:
    main.add_command(eval_group)


def _benchmark(name: str) -> Any:
    """A benchmark by name, or a custom one as ``package.module:OBJECT`` (an object with ``name``,
    ``load``, ``prompt`` and ``score``, see sifthinker.evaluation.benchmarks.base)."""
    if ":" not in name:
        from sifthinker.evaluation.benchmarks import get_benchmark

        with one_line_errors(ValueError):
            return get_benchmark(name)
    module, _, attr = name.partition(":")
    with one_line_errors(ImportError):
        obj = getattr(import_module(module), attr, None)
    missing = [a for a in ("name", "load", "prompt", "score") if not hasattr(obj, a)]
    if missing:
        raise CLIError(f"--benchmark {name}: not a benchmark object (missing {', '.join(missing)})")
    return obj


def _errors():
    from sifthinker.evaluation.endpoint import EndpointError
    from sifthinker.evaluation.run import EvalError
    from sifthinker.registry.model_versions import RegistryError
    from sifthinker.storage.locations import StorageError

    return one_line_errors(ValueError, EvalError, EndpointError, RegistryError, StorageError, ImportError)


_benchmark_option = click.option("--benchmark", "benchmark", required=True, metavar="NAME",
                                 help=f"One of {', '.join(BENCHMARKS)}, or package.module:OBJECT for your own.")
_data_option = click.option("--data", required=True, metavar="DIR_OR_S3",
                            help="The benchmark's published files: a folder, an s3://bucket/prefix, or a folder "
                                 "holding items.jsonl (the normalised item form).")
_out_option = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                           help="Output folder: metrics.json, predictions.jsonl, items.jsonl, report.html.")
_scoring_option = click.option("--scoring", type=click.Choice(["strict", "original"]), default=None,
                               help="strict (default: eval.scoring) or original (the original scripts' E1-E6).")
_track_option = click.option("--track", is_flag=True,
                             help="Log an MLflow evaluate run (the recipe's tracking store), metrics keyed "
                                  "<benchmark>/<metric>.")


@click.group("eval")
def eval_group() -> None:
    """Evaluate on the benchmarks (SIF-Bench, SpatialBench, CV-Bench, V*, SAT, RefCOCO, OVDEval)."""


@eval_group.command("run")
@_benchmark_option
@_data_option
@click.option("--model", default=None, help="A model folder or models:/NAME@ALIAS (models:/NAME/VERSION).")
@click.option("--endpoint", default=None,
              help="An OpenAI-compatible base URL, e.g. http://host:8080/openai/v1 (our server) or a vLLM /v1.")
@click.option("--endpoint-model", default=None, help="Model name to request (default: the first of GET /models).")
@_out_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N items.")
@_scoring_option
@recipe_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Items per generate call "
              "(default: eval.batch_size).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Endpoint requests in flight (default: eval.concurrency).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Generation length (default: eval.max_new_tokens).")
@_track_option
def run_cmd(benchmark: str, data: str, model: str | None, endpoint: str | None, endpoint_model: str | None,
            out_dir: Path, limit: int | None, scoring: str | None, recipe: str | None, batch_size: int | None,
            concurrency: int | None, max_new_tokens: int | None, track: bool) -> None:
    """Generate answers for a benchmark's items and score them.

    Finished items are cached in OUT/predictions.jsonl: a rerun (after a kill, or with a larger --limit)
    generates only what is missing, and a changed model, endpoint, prompt or setting is generated again.
    """
    if (model is None) == (endpoint is None):
        raise CLIError("give exactly one of --model and --endpoint")
    if endpoint_model and not endpoint:
        raise CLIError("--endpoint-model goes with --endpoint")
    cfg = load_recipe(recipe)
    for key, value in (("batch_size", batch_size), ("concurrency", concurrency), ("max_new_tokens", max_new_tokens)):
        if value is not None:
            setattr(cfg.eval, key, value)
    bench = _benchmark(benchmark)
    from sifthinker.evaluation.run import run_benchmark

    try:
        with sigterm_interrupts(), _errors():
            res = run_benchmark(cfg, bench, data, out_dir, model=model, endpoint=endpoint,
                                endpoint_model=endpoint_model, limit=limit, scoring=scoring, track=track)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (sifthinker.cli.signals)
        click.echo(f"\n{'terminated' if isinstance(e, Terminated) else 'interrupted'}: finished items are kept in "
                   f"{out_dir / 'predictions.jsonl'}, run the same command again to resume", err=True)
        sys.exit(exit_code(e))
    click.echo(res.headline())
    click.echo(f"{res.generated} generated, {res.cached} from the cache; report: {res.report_html}", err=True)


@eval_group.command("score")
@_benchmark_option
@_data_option
@click.option("--predictions", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help='A JSONL file, one {"id": ..., "response": ...} per item.')
@_out_option
@_scoring_option
@recipe_option
@_track_option
def score_cmd(benchmark: str, data: str, predictions: Path, out_dir: Path, scoring: str | None, recipe: str | None,
              track: bool) -> None:
    """Score predictions made anywhere (another harness, a saved run) against a benchmark's items."""
    cfg = load_recipe(recipe)
    bench = _benchmark(benchmark)
    from sifthinker.evaluation.run import score_predictions_file

    with _errors():
        res = score_predictions_file(cfg, bench, data, predictions, out_dir, scoring=scoring, track=track)
    click.echo(res.headline())
    click.echo(f"report: {res.report_html}", err=True)
