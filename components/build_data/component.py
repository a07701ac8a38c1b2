"""build_data: the recipe's train and eval splits as two SIF dataset folders (`build_dataset`)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def build_data(recipe: str, train_data: Output[Dataset], eval_data: Output[Dataset], pipeline_run: str = ""):
    """Build train and eval SIF records (records.json, images, depth) from the recipe's data source."""
    from pathlib import Path

    from sifthinker.data.build import build_dataset
    from sifthinker.names import Stage
    from sifthinker.runtime.stage_logs import log_build
    from sifthinker.runtime.stages import stage

    with stage(Stage.BUILD_DATA, recipe, pipeline_run, track=True) as st:
        summaries = {}
        for split, data in (("train", train_data), ("eval", eval_data)):
            summary = summaries[split] = build_dataset(st.cfg, split, Path(data.path))
            print(summary.format())
            data.metadata.update({
                "split": split, "source": st.cfg.data.source, "num_records": summary.num_records,
                "categories": dict(summary.categories), "rejected": len(summary.rejections),
            })
        log_build(st.cfg.name, summaries)
        st.done(", ".join(s.headline() for s in summaries.values()))
