"""gate: the evaluate steps' metrics, merged, against `cfg.gate.thresholds` (minimums) and
`cfg.gate.vs_champion` (allowed drops below the current champion) (`run_gate`).

The decision is the component's return value (`Output`, a bool) and the pipeline guards register and
deploy with `dsl.If(gate.outputs["Output"] == True)`. A failed gate is not an error: the run ends
cleanly and `failures` (one line per failed comparison) says why. `metrics` is the merged metrics JSON
that register records. (The decision is not a named output because kfp's local runner cannot evaluate a
condition on a named output of a multi-output task.)
"""

from kfp import dsl
from kfp.dsl import OutputPath

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def gate(recipe: str, metrics_parts: list, failures: OutputPath(str), metrics: OutputPath(str),
         pipeline_run: str = "") -> bool:
    """Check the merged evaluation metrics against the recipe's gate; True when every rule holds."""
    import json

    from sifthinker.names import Stage
    from sifthinker.registry.gate import merge_metrics, run_gate
    from sifthinker.runtime.stage_logs import log_gate
    from sifthinker.runtime.stages import stage

    with stage(Stage.GATE, recipe, pipeline_run, track=True) as st:
        merged = merge_metrics(metrics_parts)
        result = run_gate(st.cfg, merged)
        print(result.summary())
        log_gate(result)
        with open(failures, "w") as f:
            f.write("\n".join(result.failures))
        with open(metrics, "w") as f:
            f.write(json.dumps(merged))
        st.done(result.headline(), ok=result.passed)
    return result.passed
