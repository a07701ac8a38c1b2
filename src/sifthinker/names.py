"""The one place each list of names is spelled: pipeline stages, rewards, environment variables.

A leaf module (standard library only) so that every layer, the KFP components included, can import it
without pulling anything else in. Code compares and builds names from here; tests check that the KFP
components, the pipeline's tasks and the recipe defaults agree with it.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """The pipeline's steps, in execution order; the values are the KFP task names and MLflow stage tags."""

    BUILD_DATA = "build-data"
    VALIDATE_DATA = "validate-data"
    SFT = "sft"
    GRPO_SIF = "grpo-sif"
    EVALUATE = "evaluate"
    GATE = "gate"
    REGISTER = "register"
    DEPLOY = "deploy"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)
TRAINING_STAGES: tuple[str, ...] = (Stage.SFT.value, Stage.GRPO_SIF.value)

# The benchmarks `sifthinker eval` and the evaluate stage know (sifthinker.evaluation.benchmarks).
BENCHMARKS: tuple[str, ...] = ("sif-bench", "spatialbench", "cv-bench", "vstar", "sat", "refcoco", "ovdeval")

# `parity`: the project's fixes of the original code, or the original behaviour for comparison.
PARITY_MODES: tuple[str, ...] = ("fixed", "original")

# Depth providers: how the colour depth image a model sees is made for an RGB image without one.
DEPTH_PROVIDERS: tuple[str, ...] = ("depth-anything-v2", "fake-gradient")

# The four GRPO-SIF rewards (method spec, section 3), in the order TRL receives and logs them.
REWARDS: tuple[str, ...] = ("format", "answer", "box", "depth")

# Where a pipeline step and the training nodes mount platform.workspace_pvc (the step env model and the
# TrainJob both name it, so it lives below both).
WORKSPACE_MOUNT = "/workspace"


class Env(StrEnum):
    """Environment variables the platform reads (values are the variable names)."""

    WORK_DIR = "SIFTHINKER_WORK_DIR"  # overrides the recipe's work_dir (a pipeline's shared workspace)
    PIPELINE_RUN = "SIFTHINKER_PIPELINE_RUN"  # the pipeline run id every stage's MLflow run is tagged with
    EVENTS = "SIFTHINKER_EVENTS"  # a file to which stages append progress events (JSON lines)
    NPROC = "SIFTHINKER_NPROC"  # training processes to launch (default: one per visible GPU)
    TORCH_THREADS = "SIFTHINKER_TORCH_THREADS"  # CPU threads for torch (default: all cores, 1 per step)
    MODEL_CACHE = "SIFTHINKER_MODEL_CACHE"  # where models:/ URIs are downloaded (default: <work>/models/registry)
    RECIPE_YAML = "SIFTHINKER_RECIPE_YAML"  # the recipe as YAML text (set by the rendered InferenceService)
    CRD_DIR = "CRD_DIR"  # CRD YAMLs for offline validation of custom resources (optional)
    KUBECTL = "KUBECTL"  # the kubectl binary (default: the one on PATH)
    S3_RETRY_SECONDS = "SIFTHINKER_S3_RETRY_SECONDS"  # how long checkpoint writes to S3 retry an outage (300)
    MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"  # MLflow's own variable; a recipe's tracking_uri wins
