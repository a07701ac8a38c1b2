"""What every pipeline stage does around its library call, with no KFP in sight.

A KFP component (``components/<name>/component.py``) is a thin wrapper::

    with stage(Stage.SFT, recipe, pipeline_run) as st:
        result = run_sft(st.cfg, ...)
        st.done(result.headline())

``stage`` rebuilds the run's :class:`~sifthinker.config.run_config.RunConfig` from the ``recipe`` pipeline
parameter, tags the stage's MLflow runs with the pipeline run, and reports start, end (with the stage's
key numbers) or failure as :mod:`sifthinker.runtime.events`. ``recipe_parameter`` is the inverse: what the
pipeline passes as ``recipe``. ``json_safe`` turns results into plain JSON for KFP metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.names import Env, Stage
from sifthinker.runtime import events

__all__ = ["StageRun", "json_safe", "recipe_parameter", "stage", "stage_config"]


def stage_config(recipe: str, pipeline_run: str = "") -> RunConfig:
    """The run's config from the ``recipe`` pipeline parameter (recipe YAML, or JSON as in the default).

    ``pipeline_run`` (the KFP job id) becomes ``SIFTHINKER_PIPELINE_RUN`` for the stage's MLflow run,
    unless the environment already names one (a local run sets it for the whole run).
    """
    text = recipe.strip()
    try:
        data = json.loads(text) if text.startswith("{") else (yaml.safe_load(text) or {})
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"recipe parameter: not valid YAML/JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError("recipe parameter: a recipe is a mapping at the top level")
    cfg = RunConfig.from_dict(data)
    # "{{...}}" is KFP's placeholder text when a component runs outside a pipeline.
    if pipeline_run and not pipeline_run.startswith("{{") and not os.environ.get(Env.PIPELINE_RUN):
        os.environ[Env.PIPELINE_RUN] = pipeline_run
    return cfg


def recipe_parameter(cfg: RunConfig) -> str:
    """The ``recipe`` parameter value for ``cfg``: the recipe as one line of JSON (which is YAML too).

    One line because kfp writes parameter defaults into the compiled file's header comment, and a
    multi-line default would break out of the comment and make the file invalid YAML. A run may still
    pass a block-style recipe YAML as the argument.
    """
    return json.dumps(cfg.to_dict())


def json_safe(obj: Any) -> Any:
    """Plain JSON data (for KFP artifact metadata and output strings): dataclasses, paths, numpy scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        with contextlib.suppress(Exception):
            return json_safe(obj.item())
    return str(obj)


@dataclass
class StageRun:
    """The stage in progress: its name, its config, and the one-line summary it ends with."""

    name: Stage
    cfg: RunConfig
    summary: str = ""
    ok: bool = True

    def done(self, summary: str, ok: bool = True) -> None:
        """Record the stage's key numbers (``ok=False``: it finished but said no, like a failed gate)."""
        self.summary, self.ok = summary, ok


@contextlib.contextmanager
def stage(name: Stage, recipe: str, pipeline_run: str = "", part: str = "", track: bool = False
          ) -> Iterator[StageRun]:
    """Run one stage: its config, a start event, and a ``done`` (or ``failed``) event at the end.

    ``part`` names one of several parallel runs of the stage (evaluate's benchmarks): ``evaluate:vstar``.
    ``track``: open the stage's MLflow run (:func:`sifthinker.registry.tracking.stage_run`) around the body, for the
    stages whose library call opens none itself (build-data, validate-data, gate, deploy).
    """
    t0 = time.monotonic()
    who = f"{name}:{part}" if part else str(name)
    events.emit("start", who)
    try:
        run = StageRun(name, stage_config(recipe, pipeline_run))
        if track:
            from sifthinker.registry.tracking import stage_run

            with stage_run(run.cfg, name, part=part):
                yield run
        else:
            yield run
    except BaseException as e:
        first = (str(e).strip().splitlines() or [""])[0]
        events.emit("failed", who, error=f"{type(e).__name__}: {first}", seconds=time.monotonic() - t0)
        raise
    events.emit("done", who, summary=run.summary, ok=run.ok, seconds=time.monotonic() - t0)
