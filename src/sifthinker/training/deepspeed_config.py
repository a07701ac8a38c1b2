"""The recipe's DeepSpeed config: read and checked once, device settings adapted to the machine.

A recipe names a DeepSpeed JSON file (``sft.deepspeed`` / ``grpo.deepspeed``, e.g.
``images/deepspeed/zero3.json``). :func:`deepspeed_config` reads it for both preflight (so a missing or
broken file fails before any model loads) and the trainer (which gets the resulting dict, not the path),
so that the config a run trains with is the one that was checked. On a machine without CUDA the same file
runs on the CPU: half precision off (DeepSpeed's CPU accelerator trains in float32 here) and nothing else
changed, so a CPU test exercises the very ZeRO settings a GPU run uses. :func:`cpu_env` is what a CPU
launch adds to the environment (DeepSpeed picks its accelerator from ``DS_ACCELERATOR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DeepSpeedConfigError", "deepspeed_config", "cpu_env", "init_deepspeed_comm"]

ZERO_STAGES = (0, 1, 2, 3)
# Offload targets DeepSpeed knows; anything else fails only when the engine starts.
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


class DeepSpeedConfigError(ValueError):
    """The DeepSpeed config file is missing or invalid; the message says which file and what is wrong."""


def _problems(cfg: dict[str, Any]) -> list[str]:
    out = []
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        return [f"zero_optimization must be an object, got {type(zero).__name__}"]
    stage = zero.get("stage", 0)
    if stage not in ZERO_STAGES:
        out.append(f"zero_optimization.stage must be one of {ZERO_STAGES}, got {stage!r}")
    for key in ("offload_optimizer", "offload_param"):
        device = (zero.get(key) or {}).get("device", "none")
        if device not in OFFLOAD_DEVICES:
            out.append(f"zero_optimization.{key}.device must be one of {OFFLOAD_DEVICES}, got {device!r}")
    if key_param := zero.get("offload_param"):
        if key_param.get("device", "none") != "none" and stage != 3:
            out.append("zero_optimization.offload_param needs stage 3")
    if stage == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        # finalize_model saves through trainer.save_model, which needs the gathered weights under ZeRO-3
        out.append("zero_optimization.stage3_gather_16bit_weights_on_model_save must be true under stage 3 "
                   "(the trained model is saved from the gathered weights)")
    for key in ("bf16", "fp16"):
        if not isinstance(cfg.get(key, {}), dict):
            out.append(f"{key} must be an object like {{\"enabled\": \"auto\"}}")
    return out


def deepspeed_config(path: str | Path, cuda: bool | None = None) -> dict[str, Any]:
    """The DeepSpeed config at ``path`` as a dict for TrainingArguments' ``deepspeed``.

    Raises :class:`DeepSpeedConfigError` for a missing file, bad JSON or settings DeepSpeed would reject
    (only after the model has loaded). ``cuda`` (default: whether torch sees a GPU) False turns half
    precision off; ZeRO stage, buckets, offload and the rest stay as written.
    """
    p = Path(path)
    if not p.is_file():
        raise DeepSpeedConfigError(f"DeepSpeed config {p} does not exist (the recipe's deepspeed path; the "
                                   "images carry images/deepspeed/ at /opt/sifthinker/deepspeed/)")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DeepSpeedConfigError(f"DeepSpeed config {p} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise DeepSpeedConfigError(f"DeepSpeed config {p} must hold a JSON object, got {type(cfg).__name__}")
    if problems := _problems(cfg):
        raise DeepSpeedConfigError(f"DeepSpeed config {p}: " + "; ".join(problems))
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        for key in ("bf16", "fp16"):
            cfg[key] = {**cfg.get(key, {}), "enabled": False}
    return cfg


def cpu_env() -> dict[str, str]:
    """Environment a CPU launch needs for DeepSpeed: its CPU accelerator (else it looks for CUDA)."""
    return {"DS_ACCELERATOR": "cpu"}


def init_deepspeed_comm() -> None:
    """Start DeepSpeed's communication (and the torch process group under it) in this rank, first thing.

    transformers builds every model under ``deepspeed.zero.Init`` once a ZeRO-3 TrainingArguments exists,
    and TRL's GRPOTrainer loads its reference model that way before the DeepSpeed engine starts. Unless
    DeepSpeed's comm is up by then, zero.Init counts a world of 1 and fails ("train_batch_size is not equal
    to micro_batch_per_gpu * gradient_acc_step * world_size"); accelerate starts it only when it creates the
    process group itself, off the CPU, and not when a group already exists (the resume barrier makes one).
    """
    import deepspeed
    import torch

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo",
                               auto_mpi_discovery=False)
