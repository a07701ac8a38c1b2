"""Evaluation of a SIFThinker model on the benchmarks: generation (model, endpoint or a fake), the
prediction cache, scoring by each benchmark's adapter, reports, and the evaluate stage.

* ``evaluate(cfg, model_dir, eval_dir, out_dir) -> EvalResult``: the stage (docs/architecture.md), every
  benchmark of ``cfg.eval.benchmarks``;
* ``run_benchmark(cfg, name, data, out_dir, model=... | endpoint=...) -> BenchmarkRun``: one benchmark
  (``sifthinker eval run``); ``score_predictions_file``: ``sifthinker eval score``;
* ``score_predictions``: SIF-Bench's per-record metrics of texts against records, without a model.

May import ``sifthinker.config``, ``data``, ``method``, ``model``, ``registry``, ``rewards``, ``runtime``,
``serving``, ``storage`` and ``names``.
"""

from sifthinker.evaluation.metrics import EvalScores, ItemScore, score_predictions
from sifthinker.evaluation.run import BenchmarkRun, EvalError, run_benchmark, score_predictions_file
from sifthinker.evaluation.runner import EvalResult, FakeOracleGenerator, ModelGenerator, evaluate

__all__ = [
    "BenchmarkRun",
    "EvalError",
    "EvalResult",
    "EvalScores",
    "FakeOracleGenerator",
    "ItemScore",
    "ModelGenerator",
    "evaluate",
    "run_benchmark",
    "score_predictions",
    "score_predictions_file",
]
