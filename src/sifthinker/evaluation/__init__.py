"""Evaluation of a SIFThinker model: pure metrics, the evaluate stage, and its report.

``evaluate(cfg, model_dir, eval_dir, out_dir) -> EvalResult`` is the stage function (docs/architecture.md);
``score_predictions`` scores texts against records without a model.
"""

from sifthinker.evaluation.metrics import EvalScores, ItemScore, score_predictions
from sifthinker.evaluation.runner import EvalResult, FakeOracleGenerator, ModelGenerator, evaluate

__all__ = [
    "EvalResult",
    "EvalScores",
    "FakeOracleGenerator",
    "ItemScore",
    "ModelGenerator",
    "evaluate",
    "score_predictions",
]
