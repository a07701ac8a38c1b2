"""The SIFThinker pipeline: build_data -> validate_data -> sft -> grpo_sif -> evaluate (per benchmark) -> gate ->
register -> deploy.

``build_pipeline(cfg)`` returns a ``@dsl.pipeline`` function for one run config. The config travels in
two ways. (1) As the ``recipe`` parameter, whose default is the whole recipe as one line of JSON (which is
YAML too; see ``sifthinker.runtime.stages.recipe_parameter``): every step rebuilds its ``RunConfig`` from
it, so one compiled file carries its config, and a run may pass another recipe YAML. (2) As compile-time
task settings from ``cfg.platform`` (images, GPUs, scheduling, /dev/shm, secrets, PVC; see
``pipelines/platform.py``): overriding ``recipe`` at submit time changes what the steps do, not where
they run.

evaluate runs once per benchmark of ``cfg.eval.benchmarks`` (a ``dsl.ParallelFor`` running
``eval.parallelism`` at once; the gate collects their metrics). register and deploy run only inside ``dsl.If(gate == True)``: a failed gate ends the run cleanly.
Every step gets its retries and caching from ``pipelines/platform.py`` (``STEP_POLICY``, ``platform.retry``).

The run parameters are typed and described in the pipeline function's signature and docstring (the
compiled spec carries both); ``sifthinker pipeline submit -p key=value`` is checked against them.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature's real types.
import re
from collections.abc import Callable, Mapping

from kfp import dsl

from pipelines.platform import apply_platform, apply_policy, check_eval_budget
from sifthinker.config.run_config import RunConfig
from sifthinker.names import Stage
from sifthinker.runtime.stages import recipe_parameter

# The KFP job id of the run, passed to every step: the MLflow parent run of the pipeline run is keyed by it
# (created by build-data, found by every later step; sifthinker.registry.tracking), so every stage nests under it.
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER


def pipeline_name(cfg: RunConfig) -> str:
    """A KFP pipeline name for the recipe: lowercase letters, digits and dashes."""
    return "sifthinker-" + (re.sub(r"[^a-z0-9]+", "-", cfg.name.lower()).strip("-") or "run")


def build_pipeline(cfg: RunConfig, retries: bool = True,
                   step_env: Mapping[str, Mapping[str, str]] | None = None) -> Callable:
    """The pipeline function for ``cfg`` (compile it with kfp's compiler or call it after ``kfp.local.init``).

    ``retries=False`` leaves out the steps' retry policies (local runs fail at once). ``step_env``: per
    step, environment variables set as plain values (a container run's stand-in for the secrets a
    cluster injects; pipelines/run.py, ``step_environments``).
    """
    from components import build_data, deploy, evaluate, gate, grpo_sif, register, sft, validate_data

    recipe_default = recipe_parameter(cfg)
    parallelism = check_eval_budget(cfg)

    @dsl.pipeline(name=pipeline_name(cfg), description=f"SIFThinker train/eval/register/deploy, recipe {cfg.name}")
    def sifthinker_pipeline(recipe: str = recipe_default, apply_deployment: bool = False):
        """Build data, SFT, GRPO-SIF, evaluate, gate, register and deploy a SIFThinker model.

        Args:
            recipe: The run's recipe, YAML or JSON (default: the recipe compiled in, as one line of JSON). Changes what the steps do, not where they run (images, GPUs are compiled in).
            apply_deployment: Let the deploy step apply the InferenceService to the cluster (default: only render and validate it).
        """
        data = build_data(recipe=recipe, pipeline_run=RUN_ID)
        train_data, eval_data = data.outputs["train_data"], data.outputs["eval_data"]
        checked = validate_data(recipe=recipe, pipeline_run=RUN_ID, train_data=train_data, eval_data=eval_data)
        sft_task = sft(recipe=recipe, pipeline_run=RUN_ID, train_data=train_data).after(checked)
        grpo_task = grpo_sif(recipe=recipe, pipeline_run=RUN_ID, train_data=train_data,
                             sft_model=sft_task.outputs["model"])
        # One evaluate step per benchmark, eval.parallelism at once on a cluster; the gate merges their metrics.
        with dsl.ParallelFor(items=[b.name for b in cfg.eval.benchmarks], name="benchmarks",
                             parallelism=parallelism) as benchmark:
            eval_task = evaluate(recipe=recipe, pipeline_run=RUN_ID, benchmark=benchmark,
                                 model=grpo_task.outputs["model"], eval_data=eval_data)
        gate_task = gate(recipe=recipe, pipeline_run=RUN_ID, metrics_parts=dsl.Collected(eval_task.outputs["Output"]))
        with dsl.If(gate_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            reg_task = register(recipe=recipe, pipeline_run=RUN_ID, model=grpo_task.outputs["model"],
                                metrics_json=gate_task.outputs["metrics"])
            deploy_task = deploy(recipe=recipe, pipeline_run=RUN_ID, model_uri=reg_task.outputs["model_uri"],
                                 apply=apply_deployment)
        tasks = {Stage.BUILD_DATA: data, Stage.VALIDATE_DATA: checked, Stage.SFT: sft_task,
                 Stage.GRPO_SIF: grpo_task, Stage.EVALUATE: eval_task, Stage.GATE: gate_task,
                 Stage.REGISTER: reg_task, Stage.DEPLOY: deploy_task}
        for step, task in tasks.items():
            apply_platform(task, cfg, step)
            apply_policy(task, cfg, step, retries=retries)
            for name, value in (step_env or {}).get(step, {}).items():
                task.set_env_variable(name, value)

    return sifthinker_pipeline
