"""Kubeflow Pipelines components of SIFThinker: one thin ``@dsl.component`` per stage.

Each ``components/<name>/component.py`` imports ``sifthinker`` inside the function and calls one library
function (docs/architecture.md, "Stages"); the logic lives in ``src/sifthinker``. ``COMPONENTS`` maps the
pipeline's task names to the components, in pipeline order.
"""

from components.build_data.component import build_data
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.gate.component import gate
from components.grpo_sif.component import grpo_sif
from components.register.component import register
from components.sft.component import sft
from components.validate_data.component import validate_data
from sifthinker.names import Stage

COMPONENTS = {
    Stage.BUILD_DATA: build_data,
    Stage.VALIDATE_DATA: validate_data,
    Stage.SFT: sft,
    Stage.GRPO_SIF: grpo_sif,
    Stage.EVALUATE: evaluate,
    Stage.GATE: gate,
    Stage.REGISTER: register,
    Stage.DEPLOY: deploy,
}

__all__ = ["COMPONENTS", "build_data", "deploy", "evaluate", "gate", "grpo_sif", "register", "sft", "validate_data"]
