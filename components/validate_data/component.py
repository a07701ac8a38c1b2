"""validate_data: the Great Expectations suite over both splits (`assert_valid`); a failure stops the run."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def validate_data(recipe: str, train_data: Input[Dataset], eval_data: Input[Dataset], report: Output[Markdown]):
    """Check train and eval records; write a Markdown report, then raise if any expectation failed."""
    from sifthinker.data.checks import DataValidationError, assert_valid
    from sifthinker.orchestration import stage_config

    cfg = stage_config(recipe)
    lines, errors = ["# Data validation", ""], []
    for split, data in (("train", train_data), ("eval", eval_data)):
        try:
            assert_valid(data.path, balance_tolerance=cfg.data.balance_tolerance)
            lines.append(f"- **{split}**: all expectations met")
        except DataValidationError as e:
            errors.append(str(e))
            lines.append(f"- **{split}**: {len(e.result.failures)} expectation(s) failed")
            lines += [f"  - {f}" for f in e.result.failures]
    with open(report.path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if errors:
        raise RuntimeError("data validation failed:\n" + "\n".join(errors))
