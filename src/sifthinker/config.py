"""One config object per run: `RunConfig`, loaded from a recipe YAML (recipes/*.yaml).

Unknown keys are errors (a typo must not silently fall back to a default). Relative paths in the recipe
are resolved against `work_dir`, which defaults to `./work` and can be overridden by SIFTHINKER_WORK_DIR.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe that cannot be loaded; the message names the offending key."""


@dataclass
class DataConfig:
    source: str = "synthetic"
    num_train: int = 160
    num_eval: int = 40
    seed: int = 0
    eval_seed: int = 100_000  # far from the train seed so held-out scenes never repeat train scenes
    width: int = 320
    height: int = 240
    balance_tolerance: float = 0.25
    source_path: str | None = None  # for file-backed sources (e.g. a VisCoT JSON)


@dataclass
class TinyModelConfig:
    """Shape of the locally built tiny Qwen2.5-VL (random weights; only for CPU runs and tests)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_hidden_size: int = 32
    vision_depth: int = 1
    vision_heads: int = 2
    vocab_size: int = 1000
    seed: int = 0


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


@dataclass
class ModelConfig:
    base: str = "tiny"  # "tiny" builds the tiny model; otherwise a hub id or a local folder
    cache_dir: str = "models"
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    torch_dtype: str = "float32"
    attn_implementation: str = "sdpa"
    freeze_vision: bool = True
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class SFTConfig:
    epochs: float = 3.0
    learning_rate: float = 1e-4
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 2048
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    lora: LoraConfig | None = None  # None = full fine-tune (tiny model); the paper uses r=8, alpha=16
    logging_steps: int = 5
    deepspeed: str | None = None  # path to a DeepSpeed JSON for multi-GPU profiles


@dataclass
class GRPOConfig:
    num_items: int = 32
    num_generations: int = 8
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    temperature: float = 1.0
    max_completion_length: int = 256
    beta: float = 0.04
    learning_rate: float = 1e-5
    epochs: float = 1.0
    max_steps: int = -1
    lora: LoraConfig | None = None
    reward_weights: dict[str, float] = field(default_factory=lambda: {"format": 1.0, "answer": 1.0, "box": 1.0, "depth": 1.0})
    progress_store: str = "progress.sqlite"
    logging_steps: int = 1
    deepspeed: str | None = None
    use_vllm: bool = False


@dataclass
class EvalConfig:
    max_new_tokens: int = 256
    batch_size: int = 8
    num_render: int = 4


@dataclass
class GateConfig:
    # metric name -> minimum value; every threshold must hold for the gate to pass
    thresholds: dict[str, float] = field(default_factory=lambda: {"format_validity": 0.8})


@dataclass
class RegistryConfig:
    tracking_uri: str | None = None  # None: sqlite:///<work_dir>/mlflow.db (embedded default)
    artifact_root: str | None = None  # None: <work_dir>/mlartifacts
    experiment: str = "sifthinker"
    model_name: str = "sifthinker"


@dataclass
class ServingConfig:
    name: str = "sifthinker"
    namespace: str = "default"
    port: int = 8080
    max_new_tokens: int = 256
    runtime_image: str = "ghcr.io/sifthinker/sifthinker-serve:0.1.0"
    storage_uri_prefix: str | None = None  # e.g. s3://models; None: the MLflow artifact URI
    service_account: str | None = None
    gpu: int = 0


@dataclass
class Toleration:
    key: str
    operator: str = "Equal"
    value: str | None = None
    effect: str = "NoSchedule"


@dataclass
class GPUConfig:
    count: int = 0
    resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)
    shm_size: str | None = None  # memory-backed /dev/shm size, e.g. "16Gi" (NCCL and dataloaders need it)
    cpu: str | None = None
    memory: str | None = None


@dataclass
class SecretEnv:
    secret: str
    env: dict[str, str] = field(default_factory=dict)  # secret key -> environment variable


@dataclass
class PlatformConfig:
    image: str = "ghcr.io/sifthinker/sifthinker:0.1.0"
    gpu_image: str = "ghcr.io/sifthinker/sifthinker-train:0.1.0"
    gpu: GPUConfig = field(default_factory=GPUConfig)
    gpu_steps: list[str] = field(default_factory=lambda: ["sft", "grpo-sif"])
    secrets: list[SecretEnv] = field(default_factory=list)
    workspace_pvc: str | None = None  # a PVC mounted at /workspace for models and data on a cluster
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunConfig:
    name: str = "local"
    work_dir: str = "work"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)

    # -- paths -------------------------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(os.environ.get("SIFTHINKER_WORK_DIR") or self.work_dir).resolve()

    def path(self, rel: str) -> Path:
        """A recipe path resolved against the work directory (absolute paths stay as they are)."""
        p = Path(rel)
        return p if p.is_absolute() else self.work_path / p

    @property
    def tracking_uri(self) -> str:
        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.work_path / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.registry.artifact_root or str(self.work_path / "mlartifacts")

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _build(cls, data, "recipe")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a recipe is a mapping at the top level")
        return cls.from_dict(data)


def _build(tp: Any, value: Any, where: str) -> Any:
    """Build a (nested) dataclass or typed value from plain YAML data, with key paths in errors."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _build(a, value, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from e
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        (a,) = typing.get_args(tp)
        return [_build(a, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): _build(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-4 as a string
        except ValueError as e:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from e
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value
