"""The evaluate stage: every benchmark of ``cfg.eval.benchmarks``, one sub-folder each, one report.

``evaluate(cfg, model_dir, eval_dir, out_dir)`` runs :func:`sifthinker.evaluation.run.run_benchmark` for
each listed benchmark into ``out_dir/<benchmark>/`` (``sif-bench`` without ``data`` scores ``eval_dir``,
the pipeline's held-out split) with one generator, so the model is loaded once. It writes:

* ``metrics.json``: every benchmark's metrics keyed ``<benchmark>/<metric>``, plus sif-bench's also
  unprefixed (``format_validity``, ``accuracy``, ...: the gate's bare keys mean sif-bench's; MLflow gets
  each metric once, prefixed);
* ``report.html``: the index page, each benchmark's facts, chart, metrics and gallery embedded, linking
  to each ``<benchmark>/report.html`` with its items;

and, when ``track``, logs one MLflow run ``evaluate:<benchmark>`` per benchmark, opened before its work
(metrics keyed ``<benchmark>/<metric>``, its files under its name; the index page with the first).

Generation is behind a seam: ``generate_fn(requests) -> outcomes`` (:mod:`sifthinker.evaluation.inputs`).
The default is :class:`ModelGenerator` on ``model_dir``; tests pass :class:`FakeOracleGenerator`, a fake
that replays each SIF-Bench record's own trace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from sifthinker.config.run_config import RunConfig
from sifthinker.evaluation.generators import FakeOracleGenerator, ModelGenerator
from sifthinker.evaluation.inputs import GenerateFn
from sifthinker.evaluation.report import write_index_report
from sifthinker.evaluation.run import BenchmarkRun, log_benchmark, run_benchmark, tracked

__all__ = ["EvalResult", "FakeOracleGenerator", "GenerateFn", "ModelGenerator", "evaluate"]

log = logging.getLogger(__name__)
PRIMARY = "sif-bench"  # its metrics are also given unprefixed (the gate's bare keys)
_SIF_HEADLINE = [("validity", "format_validity"), ("accuracy", "accuracy"), ("grounding Acc@0.5", "grounding_acc50"),
                 ("depth", "depth_consistency")]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions_path: Path  # sif-bench's predictions (else the first benchmark's)
    renders: list[Path]
    report_html: Path
    metrics_path: Path | None = None
    chart: Path | None = None
    run_id: str | None = None  # the MLflow run, when tracked
    runs: dict[str, BenchmarkRun] = field(default_factory=dict, repr=False)

    def headline(self) -> str:
        """The key numbers in one line: sif-bench's validity, accuracy, grounding and depth consistency,
        then every other benchmark's overall score."""
        m = self.metrics
        parts = [f"{label} {m[key]:.3f}" for label, key in _SIF_HEADLINE if key in m]
        line = ", ".join(parts) + f" ({int(m.get('n', 0))} items)" if parts else ""
        others = [f"{b} overall {r.metrics.get('overall', 0.0):.3f} ({int(r.metrics.get('n', 0))} items, "
                  f"{int(r.metrics.get('format_failures', 0))} format failure(s))"
                  for b, r in self.runs.items() if b != PRIMARY]
        return "; ".join(x for x in (line, ", ".join(others)) if x)


def evaluate(
    cfg: RunConfig,
    model_dir: str | Path | None,
    eval_dir: str | Path,
    out_dir: str | Path,
    *,
    generate_fn: GenerateFn | None = None,
    track: bool = True,
    limit: int | None = None,
    only: str | None = None,
) -> EvalResult:
    """Run the evaluate stage (module docstring); ``track=False`` skips MLflow (files are still written).
    ``limit`` caps every benchmark's items (with a benchmark's own ``limit``, the smaller wins); ``only``
    runs just that one of ``cfg.eval.benchmarks`` (the pipeline evaluates each in its own step)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if only is not None:
        refs = [b for b in cfg.eval.benchmarks if b.name == only]
        if not refs:
            raise ValueError(f"{only!r} is not in eval.benchmarks ({', '.join(b.name for b in cfg.eval.benchmarks)})")
        cfg = replace(cfg, eval=replace(cfg.eval, benchmarks=refs))
    names = [b.name for b in cfg.eval.benchmarks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # one sub-folder and one metric prefix per benchmark
        raise ValueError(f"eval.benchmarks lists {', '.join(repeated)} more than once")
    for ref in cfg.eval.benchmarks:
        if ref.data is None and ref.name != PRIMARY:
            raise ValueError(f"eval.benchmarks: {ref.name} needs `data` (a folder or s3:// URI of its files)")
    if generate_fn is None:
        if model_dir is None:
            raise ValueError("model_dir is required unless generate_fn is given")
        generate_fn = ModelGenerator(cfg, model_dir)  # one generator: the model is loaded once for all

    gen_name = getattr(generate_fn, "name", type(generate_fn).__name__)
    params = {"model_dir": str(model_dir), "eval_dir": str(eval_dir), "generator": gen_name,
              "scoring": cfg.eval.scoring, "max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    runs: dict[str, BenchmarkRun] = {}
    for ref in cfg.eval.benchmarks:
        caps = [c for c in (limit, ref.limit) if c]
        # one MLflow run per benchmark, opened before its work so the run's times cover it
        with tracked(cfg, ref.name, track, params) as run_id:
            run = runs[ref.name] = run_benchmark(cfg, ref.name, ref.data or eval_dir, out / ref.name,
                                                 model=model_dir, limit=min(caps) if caps else None,
                                                 generate_fn=generate_fn, track=False)
            run.run_id = run_id
            if track:
                log_benchmark(run)
        log.info("%s", run.headline())

    metrics = {f"{b}/{k}": v for b, r in runs.items() for k, v in r.metrics.items()}
    if PRIMARY in runs:
        metrics.update(runs[PRIMARY].metrics)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    context = {"recipe": cfg.name, "model": str(model_dir), "generator": gen_name, "scoring": cfg.eval.scoring,
               "benchmarks": ", ".join(runs)}
    sections = [replace(r.report, link=f"{b}/report.html") for b, r in runs.items() if r.report is not None]
    html = write_index_report(out / "report.html", sections, title=f"SIFThinker evaluation: {cfg.name}",
                              context=context)
    first = runs.get(PRIMARY) or next(iter(runs.values()))
    result = EvalResult(metrics=metrics, predictions_path=first.predictions_path,
                        renders=[p for r in runs.values() for p in r.renders], report_html=html,
                        metrics_path=metrics_path, chart=first.chart, runs=runs)
    if track:  # the index page and the merged metrics.json go with the first benchmark's run
        import mlflow

        result.run_id = first.run_id
        for p in (metrics_path, html):
            mlflow.MlflowClient().log_artifact(first.run_id, str(p))
    return result
