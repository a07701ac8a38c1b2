"""evaluate: one benchmark of the recipe's `eval.benchmarks` on the trained model (`evaluate(..., only=)`).

The pipeline runs one evaluate step per benchmark (a `dsl.ParallelFor`: in parallel on a cluster); the
gate merges their metrics.
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def evaluate(recipe: str, pipeline_run: str, benchmark: str, model: Input[Model], eval_data: Input[Dataset],
             metrics: Output[Metrics], report: Output[HTML], predictions: Output[Dataset]) -> str:
    """Score the model on `benchmark`; returns its metrics (keyed `<benchmark>/<metric>`) as a JSON string."""
    import json
    import shutil
    from pathlib import Path

    from sifthinker.evaluation import evaluate as run_evaluation
    from sifthinker.names import Stage
    from sifthinker.runtime.stages import json_safe, stage

    with stage(Stage.EVALUATE, recipe, pipeline_run, part=benchmark) as st:
        result = run_evaluation(st.cfg, Path(model.path), Path(eval_data.path), Path(predictions.path),
                                only=benchmark)
        values = json_safe(result.metrics)
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.log_metric(name, value)
        shutil.copyfile(result.report_html, report.path)
        predictions.metadata.update({"benchmark": benchmark, "predictions": str(result.predictions_path),
                                     "renders": len(result.renders)})
        st.done(result.headline())
    return json.dumps(values)
