"""One config object per run: `RunConfig`, loaded from a recipe YAML (recipes/*.yaml).

Unknown keys are errors (a typo must not silently fall back to a default), and so are values out of
range: every field carries, as in TRL's configs, ``metadata={"help": ...}`` plus its constraints
(``ge``, ``gt``, ``le``, ``lt``, ``choices``, ...), and one checker (:mod:`sifthinker.config.schema`, run
on every section as it is built) enforces them, naming the key path (``recipe.data.num_train: must be
>= 1, got -5``). ``describe_fields()`` lists every key with its type, default and help. Relative paths
in the recipe are resolved against `work_dir`, which defaults to `./work` and can be overridden by
SIFTHINKER_WORK_DIR.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sifthinker.config.data_config import DataConfig, DepthConfig  # the data and depth sections (module size)
from sifthinker.config.model_config import LoraConfig, ModelConfig
from sifthinker.config.platform_config import (
    _DNS1035,
    _DNS1123,
    _ENV_NAME,
    _QUANTITY,
    _SUBDOMAIN,
    PlatformConfig,
)
from sifthinker.config.pretrain_config import PretrainConfig
from sifthinker.config.schema import ConfigError, FieldDoc, build, read_yaml
from sifthinker.config.schema import describe_fields as _describe
from sifthinker.config.schema import doc_field as _f
from sifthinker.names import BENCHMARKS, PARITY_MODES, REWARDS, Env

__all__ = ["RunConfig", "describe_fields"]


@dataclass
class SFTConfig:
    epochs: float = _f(3.0, "Training epochs (fractions allowed).", gt=0)
    learning_rate: float = _f(1e-4, "Peak learning rate.", gt=0)
    per_device_batch_size: int = _f(4, "Sequences per device per step.", ge=1)
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients are summed before an update.", ge=1)
    max_length: int = _f(2048, "Token cutoff per sequence.", ge=1)
    warmup_ratio: float = _f(0.1, "Share of the steps spent warming the learning rate up.", ge=0, le=1)
    lr_scheduler: str = _f("cosine", "transformers scheduler name (cosine, linear, constant, ...).", nonempty=True)
    lora: LoraConfig | None = _f(None, "LoRA adapters (merged at the end); null: full fine-tune. The paper: "
                                       "r=8, alpha=16.")
    logging_steps: int = _f(5, "Log metrics every this many steps.", ge=1)
    deepspeed: str | None = _f(None, "Path to a DeepSpeed JSON config (e.g. images/deepspeed/zero3.json); checked in "
                                     "preflight, half precision turned off without CUDA.", nonempty=True)


@dataclass
class JudgeConfig:
    """An OpenAI-compatible endpoint that scores free-form answers (sifthinker.rewards.judge)."""

    base_url: str = _f(help="Endpoint base URL, e.g. http://judge:8000/v1 (<base_url>/chat/completions).", nonempty=True)
    model: str = _f(help="Model name sent with each request.", nonempty=True)
    api_key_env: str | None = _f("OPENAI_API_KEY", "Environment variable holding the API key; null: no key.",
                                 pattern=_ENV_NAME)
    timeout_s: float = _f(30.0, "Seconds before a request is abandoned (then retried).", gt=0)
    retries: int = _f(2, "Retries of a failed request (timeouts, connection errors, 429/5xx, no score).", ge=0)
    max_concurrency: int = _f(8, "Most requests in flight.", ge=1)
    on_error: str = _f("zero", "When a request still fails: zero (score the answer 0 and count it in "
                               "judge/failures) or stop (end the run).", choices=("zero", "stop"))


@dataclass
class GRPOConfig:
    num_items: int = _f(32, "Prompts trained on (the first records of the train split); 0: all.", ge=0)
    num_generations: int = _f(8, "Rollouts per prompt: the group the advantage is computed in.", ge=2)
    per_device_batch_size: int = _f(8, "Completions per device per step.", ge=1)
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients are summed before an update.", ge=1)
    # > 0, not >= 0: TRL divides the logits by it, and greedy rollouts would make every group identical.
    temperature: float = _f(1.0, "Sampling temperature of the rollouts.", gt=0)
    max_completion_length: int = _f(256, "Most tokens generated per rollout.", ge=1)
    beta: float = _f(0.04, "KL coefficient to the starting model (k3 estimator); 0 disables the KL term.", ge=0)
    learning_rate: float = _f(1e-5, "Peak learning rate.", gt=0)
    epochs: float = _f(1.0, "Passes over the prompts (fractions allowed).", gt=0)
    max_steps: int = _f(-1, "Stop after this many optimiser steps; -1: run all epochs.", ge=1, allow=(-1,))
    lora: LoraConfig | None = _f(None, "LoRA adapters (merged at the end); the paper: r=64, alpha=128, "
                                       "dropout 0.05.")
    reward_weights: dict[str, float] = _f(help="Weight per reward (format, answer, box, depth); a missing or "
                                               "0-weight reward is not computed.",
                                          factory=lambda: dict.fromkeys(REWARDS, 1.0), keys=REWARDS, ge=0,
                                          any_positive=True)
    progress_store: str = _f("progress.sqlite", "SQLite file of the answer-progress records (under work_dir); "
                                                "rank 0 keeps it, checkpoints carry a copy.", nonempty=True)
    prompt_images: str = _f("rgb+depth", "Images in the rollout prompt: rgb+depth (both, as SFT and evaluation "
                                         "see them) or rgb (the original's RL prompt, defect P1); parity: "
                                         "original sets rgb.", choices=("rgb+depth", "rgb"))
    judge: JudgeConfig | None = _f(None, "LLM judge for free-form answers (answer_type free); null: free answers "
                                         "are scored by normalised exact match. Closed-form answers never reach it.")
    save_steps: int = _f(0, "Save a checkpoint (model, optimizer, scheduler, RNG, step, progress store) every this "
                            "many steps; 0: none. A rerun of the same stage resumes from the latest one.", ge=0)
    checkpoint_dir: str = _f("checkpoints", "Folder (under work_dir) or s3:// URI the checkpoints go to, in a "
                                            "sub-folder per stage run; removed after a successful run.", nonempty=True)
    save_total_limit: int = _f(2, "Checkpoints kept (older ones are deleted).", ge=1)
    sample_steps: int = _f(10, "Every this many steps, log a table of sample completions with their rendered "
                               "traces to MLflow; 0: never.", ge=0)
    num_samples: int = _f(4, "Completions in each sample table.", ge=1)
    logging_steps: int = _f(1, "Log metrics every this many steps.", ge=1)
    deepspeed: str | None = _f(None, "Path to a DeepSpeed JSON config (e.g. images/deepspeed/zero3.json); checked in "
                                     "preflight, half precision turned off without CUDA.", nonempty=True)
    use_vllm: bool = _f(False, "Rollouts with vLLM in TRL's colocate mode (in the training processes, sharing their "
                               "GPUs) when vllm is installed and a GPU is present; else plain generate, with a warning. "
                               "A vLLM outside TRL's supported range fails preflight.")


@dataclass
class BenchmarkRef:
    name: str = _f(help="Benchmark name (sifthinker.names.BENCHMARKS).", choices=BENCHMARKS)
    data: str | None = _f(None, "Folder (relative to the recipe file) or s3:// URI of the benchmark's published "
                                "files; sif-bench without one uses the pipeline's held-out split.")
    limit: int | None = _f(None, "Score only the first N items (smoke runs).", ge=1)


@dataclass
class EvalResources:
    """One evaluate step's pod: generation for one benchmark needs the model's weights and a KV cache, not
    training's optimizer state, so a 7B model evaluates on one GPU (docs/cluster.md, "Sizing")."""

    gpus: int | None = _f(None, "GPUs per evaluate step; null: platform.gpu.count (training's per node).", ge=1)
    cpu: str | None = _f(None, "CPU request and limit; null: platform.gpu.cpu when gpus is null, else 8.",
                         pattern=_QUANTITY)
    memory: str | None = _f(None, "Memory request and limit; null: platform.gpu.memory when gpus is null, else "
                                  "64Gi.", pattern=_QUANTITY)
    shm_size: str | None = _f(None, "Memory-backed /dev/shm; null: platform.gpu.shm_size when gpus is null, else "
                                    "16Gi.", pattern=_QUANTITY)


# Generation length that holds a whole SIF trace: the local profile's traces average ~290 tokens and reach
# ~450; 256 cut them short (format validity 0.43 against 0.98 at 512, recipes/local.yaml).
TRACE_TOKENS = 512


@dataclass
class EvalConfig:
    max_new_tokens: int = _f(TRACE_TOKENS, "Most tokens generated per eval item: enough for a whole SIF trace "
                                           "(cut traces score as format failures).", ge=1)
    batch_size: int = _f(8, "Eval items generated together.", ge=1)
    num_render: int = _f(4, "Traces drawn on their images for the report.", ge=0)
    benchmarks: list[BenchmarkRef] = _f(help="Benchmarks the evaluate stage runs; metrics are keyed "
                                             "<benchmark>/<metric>.", factory=lambda: [BenchmarkRef("sif-bench")],
                                        nonempty=True)
    scoring: str = _f("strict", "strict (missing <answer> is wrong) or original (the original scripts' E1-E6).",
                      choices=("strict", "original"))
    concurrency: int = _f(4, "Requests in flight when evaluating an OpenAI-compatible endpoint.", ge=1)
    request_timeout_s: float = _f(300.0, "Seconds before an endpoint request is abandoned (then retried).", gt=0)
    retries: int = _f(2, "Retries of a failed endpoint request (timeouts, 5xx, connection errors).", ge=0)
    parallelism: int = _f(1, "Benchmarks evaluated at once on a cluster (the ParallelFor's parallelism limit): "
                             "eval.resources.gpus x parallelism GPUs at once, at most training's GPUs.", ge=1)
    resources: EvalResources = _f(help="What one evaluate step (one benchmark) asks for on a cluster.",
                                  factory=lambda: EvalResources())


@dataclass
class GateConfig:
    thresholds: dict[str, float] = _f(help="Metric -> minimum value; every threshold must hold for the gate to "
                                           "pass. Keys are <benchmark>/<metric> (sif-bench/format_validity); a bare "
                                           "metric name means sif-bench's.",
                                      factory=lambda: {"format_validity": 0.8})
    vs_champion: dict[str, float] = _f(help="Metric -> allowed drop below the current champion's registered value "
                                            "(spatialbench/overall: 0.01 means >= champion - 0.01); no champion yet: "
                                            "the rule passes, saying so.", factory=dict, ge=0)


@dataclass
class RegistryConfig:
    tracking_uri: str | None = _f(None, "MLflow tracking URI; null: MLFLOW_TRACKING_URI, else "
                                        "sqlite:///<work_dir>/mlflow.db.", nonempty=True)
    artifact_root: str | None = _f(None, "Artifact root of the embedded store; null: <work_dir>/mlartifacts.",
                                   nonempty=True)
    experiment: str = _f("sifthinker", "MLflow experiment of every stage's runs.", nonempty=True)
    model_name: str = _f("sifthinker", "Registered model name.", nonempty=True)
    tracking_outage_s: float = _f(600.0, "How long a training step trains on while the tracking server takes no "
                                         "metrics (they are kept and resent in order); past it the step "
                                         "checkpoints and fails, and the rerun resumes.", gt=0)


@dataclass
class ServingConfig:
    name: str = _f("sifthinker", "InferenceService name, and the model name every serving route answers to (the "
                                 "registered name and models:/ URI are accepted as aliases).", pattern=_DNS1035)
    namespace: str = _f("default", "Kubernetes namespace of the InferenceService.", pattern=_DNS1123)
    port: int = _f(8080, "HTTP port of the model server.", ge=1, le=65535)
    max_new_tokens: int = _f(TRACE_TOKENS, "Tokens generated per request when the request does not say: enough "
                                           "for a whole SIF trace.", ge=1)
    runtime_image: str = _f("ghcr.io/sifthinker/sifthinker-serve:0.1.0", "Container image of the model server "
                                                                        "(and of the SIF transformer).",
                            nonempty=True)
    storage_uri_prefix: str | None = _f(None, "Where KServe fetches models, e.g. s3://models; null: the MLflow "
                                              "artifact URI.", nonempty=True)
    service_account: str | None = _f(None, "Service account of the predictor (storage credentials).",
                                     pattern=_SUBDOMAIN)
    gpu: int = _f(0, "GPUs per predictor replica.", ge=0)
    # ---- serving behaviour and hard limits (docs/serving.md) -------------------------------------------
    max_batch_size: int = _f(8, "Most requests generated together in one batch.", ge=1, le=256)
    max_batch_wait_ms: float = _f(200.0, "Longest wait for more requests to batch with (only while more are expected).",
                                  ge=0, le=10_000)
    max_queue: int = _f(64, "Most requests admitted but not yet generating; more get 429.", ge=1)
    max_body_bytes: int = _f(16 * 1024 * 1024, "Largest request body (bytes); larger: 413.", ge=1024)
    max_images: int = _f(2, "Most images per request, each RGB image and its depth image counted (2: one "
                                "RGB image; 2N serves multi-image items of N RGB images).", ge=2)
    max_image_pixels: int = _f(4096 * 4096, "Largest image (width x height), checked before decoding.", ge=1)
    max_question_chars: int = _f(8000, "Longest question text (characters), checked before tokenizing.", ge=1)
    max_prompt_tokens: int = _f(8192, "Most prompt tokens (text and image tokens); never more than the model's "
                                      "context minus the generation budget.", ge=16)
    max_tokens_limit: int = _f(4096, "Largest max_tokens a request may ask for.", ge=1)
    request_timeout_s: float = _f(300.0, "Seconds from arrival until a request is abandoned (408), generation "
                                         "included.", gt=0)
    retry_after_s: float = _f(5.0, "Retry-After (seconds) of every 503 and 429: the model not ready or shutting "
                                   "down, the predictor unavailable, the queue full.", gt=0)
    predictor_probe_s: float = _f(5.0, "SIF transformer: while requests are in flight, the predictor's OpenAI "
                                       "/models is probed this often, each probe given this long; a failed probe "
                                       "(a hung or dead predictor) answers them 503. Readiness probes it too.", gt=0)
    image_url_allow: list[str] = _f(help="URL prefixes the server may fetch images from (https://bucket/...); "
                                         "empty: images only as data: URLs, the server never fetches.",
                                    factory=list)
    runtime: str = _f("native", "What `sifthinker deploy` renders: native (the sifthinker predictor) or vllm "
                                "(KServe's Hugging Face runtime with the vLLM backend behind the SIF "
                                "transformer).", choices=("native", "vllm"))
    vllm_args: list[str] = _f(help="Extra arguments of the Hugging Face runtime with the vLLM backend "
                                   "(e.g. --max_model_len=8192).", factory=list)
    ready_timeout_s: float = _f(600.0, "Seconds `deploy --apply` waits for the InferenceService to be Ready.",
                                gt=0)

@dataclass
class RunConfig:
    name: str = _f("local", "Run profile name (shown in reports and MLflow).", nonempty=True)
    work_dir: str = _f("work", "Folder relative recipe paths resolve against (SIFTHINKER_WORK_DIR overrides).",
                       nonempty=True)
    parity: str = _f("fixed", "fixed: the project's corrections of the original code (method spec section 5); "
                              "original: every original behaviour (D1-D4, P1, P2, E1-E6, the lenient format "
                              "check) to reproduce the published numbers and see what each fix changes.",
                     choices=PARITY_MODES)
    data: DataConfig = _f(help="Dataset build.", factory=DataConfig)
    model: ModelConfig = _f(help="Base model and processor.", factory=ModelConfig)
    sft: SFTConfig = _f(help="SFT warm-up.", factory=SFTConfig)
    grpo: GRPOConfig = _f(help="GRPO-SIF.", factory=GRPOConfig)
    eval: EvalConfig = _f(help="Evaluation.", factory=EvalConfig)
    depth: DepthConfig = _f(help="Depth provider for images without a depth map.", factory=DepthConfig)
    gate: GateConfig = _f(help="Promotion gate.", factory=GateConfig)
    registry: RegistryConfig = _f(help="MLflow tracking and model registry.", factory=RegistryConfig)
    serving: ServingConfig = _f(help="KServe model server.", factory=ServingConfig)
    platform: PlatformConfig = _f(help="Cluster settings applied at pipeline compile time.", factory=PlatformConfig)
    pretrain: PretrainConfig = _f(help="Pre-training of the shipped tiny base (sifthinker model pretrain-base).",
                                  factory=PretrainConfig)

    def __post_init__(self) -> None:
        # One switch: original parity scores like the original scripts too (E1-E6).
        if self.parity == "original":
            self.eval.scoring = "original"
            self.grpo.prompt_images = "rgb"  # P1: the original's rollouts saw only the RGB image

    @property
    def original(self) -> bool:
        """Whether this run reproduces the original code's behaviour (``parity: original``)."""
        return self.parity == "original"

    # -- paths -------------------------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(os.environ.get(Env.WORK_DIR) or self.work_dir).resolve()

    def path(self, rel: str) -> Path:
        """A recipe path resolved against the work directory (absolute paths stay as they are)."""
        p = Path(rel)
        return p if p.is_absolute() else self.work_path / p

    @property
    def tracking_uri(self) -> str:
        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return os.environ.get(Env.MLFLOW_TRACKING_URI) or f"sqlite:///{self.work_path / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.registry.artifact_root or str(self.work_path / "mlartifacts")

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> RunConfig:
        """Check every value of a config built or changed in code (loading checks already); returns self."""
        build(RunConfig, self.to_dict(), "recipe")  # the same checks as loading, on a plain copy
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return build(cls, data, "recipe")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"recipe not found: {p}")
        if not p.is_file():
            raise ConfigError(f"recipe {p} is not a file")
        data = read_yaml(p) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a recipe is a mapping at the top level")
        cfg = cls.from_dict(data)
        for ref in cfg.eval.benchmarks:  # a benchmark folder named in a recipe is relative to the recipe
            if ref.data and "://" not in ref.data and not Path(ref.data).is_absolute():
                ref.data = str((p.parent / ref.data).resolve())
        return cfg


def describe_fields(tp: Any = None, prefix: str = "") -> Iterator[FieldDoc]:
    """(key path, type, default, help) of every recipe key, sections first then their keys, in order."""
    return _describe(tp or RunConfig, prefix)
