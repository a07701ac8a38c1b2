"""gate: every `cfg.gate.thresholds` metric must reach its minimum, and every `cfg.gate.vs_champion`
metric the current champion's value minus the allowed drop (`run_gate`).

The decision is the component's return value (`Output`, a bool) and the pipeline guards register and
deploy with `dsl.If(gate.outputs["Output"] == True)`. A failed gate is not an error: the run ends
cleanly and `failures` (one line per failed threshold) says why. (The output is not named `passed`
because kfp's local runner cannot evaluate a condition on a named output of a multi-output task.)
"""

from kfp import dsl
from kfp.dsl import OutputPath

from components._base import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def gate(recipe: str, metrics_json: str, failures: OutputPath(str)) -> bool:
    """Check the evaluation metrics against the recipe's thresholds; True when all of them hold."""
    import json

    from sifthinker.gate import run_gate
    from sifthinker.names import Stage
    from sifthinker.stages import stage

    with stage(Stage.GATE, recipe) as st:
        result = run_gate(st.cfg, json.loads(metrics_json))
        print(result.summary())
        with open(failures, "w") as f:
            f.write("\n".join(result.failures))
        st.done(result.headline(), ok=result.passed)
    return result.passed
