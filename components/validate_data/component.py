"""validate_data: the Great Expectations suite over both splits (`validate_splits`); a failure stops the run."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def validate_data(recipe: str, train_data: Input[Dataset], eval_data: Input[Dataset], report: Output[Markdown],
                  pipeline_run: str = ""):
    """Check train and eval records; write a Markdown report, then raise if any expectation failed."""
    from sifthinker.data.checks import validate_splits
    from sifthinker.names import Stage
    from sifthinker.runtime.stage_logs import log_validation
    from sifthinker.runtime.stages import stage

    with stage(Stage.VALIDATE_DATA, recipe, pipeline_run, track=True) as st:
        outcome = validate_splits({"train": train_data.path, "eval": eval_data.path},
                                  balance_tolerance=st.cfg.data.balance_tolerance)
        with open(report.path, "w") as f:
            f.write(outcome.markdown)
        print(outcome.markdown)
        log_validation(outcome)
        outcome.raise_if_failed()
        st.done(outcome.headline())
