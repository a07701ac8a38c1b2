"""Load a model folder (or hub id) with its processor: one code path for the tiny model and Qwen2.5-VL-7B.

`AutoModelForImageTextToText` + `AutoProcessor`, the dtype and attention implementation from the run
config, `device_map` only when a GPU is present (so CPU runs never touch accelerate's dispatch), and the
vision tower (with its patch merger, the projector) frozen for training when the recipe says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def resolve_dtype(name: str | None, device: str | None = None) -> Any:
    """The torch dtype for a recipe's `torch_dtype` ("auto" keeps the checkpoint's own).

    Half precision is a GPU setting: on a CPU it is slow and bf16 matmuls lose accuracy, so a bf16/fp16
    recipe falls back to float32 when no CUDA device will run the model.
    """
    import torch

    if name in (None, "", "auto"):
        return "auto"
    if name not in _DTYPES:
        raise ValueError(f"unknown torch_dtype {name!r}; expected one of {sorted(_DTYPES)} or 'auto'")
    dtype = getattr(torch, _DTYPES[name])
    on_gpu = torch.cuda.is_available() and not (device or "").startswith("cpu")
    if dtype != torch.float32 and not on_gpu:
        log.info("no GPU: loading in float32 instead of %s", name)
        return torch.float32
    return dtype


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads for CPU work; returns the number in use.

    `SIFTHINKER_TORCH_THREADS` wins when set. Otherwise, without CUDA and without an explicit
    OMP_NUM_THREADS, half the cores (at least one): on a small shared machine, OpenMP threads that
    outnumber free cores spin against each other and the data pipeline (measured on 2 loaded cores:
    one thread trained the tiny model 3-5x faster than two). With CUDA, torch's default is kept.
    """
    import torch

    want = os.environ.get(Env.TORCH_THREADS)
    if want:
        torch.set_num_threads(max(1, int(want)))
    elif not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    return torch.get_num_threads()


def vision_tower(model: Any) -> Any | None:
    """The vision encoder (with its patch merger) of a Qwen2.5-VL-style model, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.visual", "visual", "model.vision_tower", "vision_tower"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower and projector; returns how many parameters were frozen."""
    tower = vision_tower(model)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no vision tower to freeze")
    n = 0
    for p in tower.parameters():
        p.requires_grad_(False)
        n += p.numel()
    return n


def apply_pixel_budget(processor: Any, min_pixels: int, max_pixels: int) -> None:
    """Set the image processor's pixel range (Qwen's min_pixels / max_pixels) on a loaded processor."""
    import dataclasses

    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return
    # transformers 5 keeps the range in `size` (a SizeDict dataclass: shortest_edge = min pixels,
    # longest_edge = max pixels); older releases used a plain dict and min_pixels/max_pixels attributes.
    size = getattr(ip, "size", None)
    if dataclasses.is_dataclass(size):
        ip.size = dataclasses.replace(size, shortest_edge=min_pixels, longest_edge=max_pixels)
    else:
        ip.size = {**(size or {}), "shortest_edge": min_pixels, "longest_edge": max_pixels}
    for attr, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(ip, attr):
            setattr(ip, attr, value)


# What every `save_pretrained` folder of a vision-language model holds, whatever its weights' format.
MODEL_FOLDER_FILES = ("config.json", "processor_config.json|preprocessor_config.json", "tokenizer_config.json")


def check_model_folder(path: str | Path) -> Path:
    """``path`` as a model folder; ValueError saying what is missing when it is not one (before a
    server binds its port or a trainer loads anything)."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{p} is not a folder")
    missing = [f for f in MODEL_FOLDER_FILES if not any((p / alt).is_file() for alt in f.split("|"))]
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        missing.append("model weights (*.safetensors)")
    if missing:
        raise ValueError(f"{p} is not a model folder (save_pretrained layout): missing {', '.join(missing)}")
    return p


def load_model(path: str | Path, cfg: RunConfig | None = None, for_training: bool = False,
               device: str | None = None) -> tuple[Any, Any]:
    """Load `(model, processor)` from a `save_pretrained` folder or a hub id.

    - dtype and attention implementation come from `cfg.model` (float32 / sdpa without a config);
    - on a GPU and not for training, `device_map` places the model (training leaves placement to the
      Trainer / accelerate, which needs `device_map=None` for distributed runs); `device` overrides;
    - with `for_training`, the vision tower is frozen when `cfg.model.freeze_vision`, and the model is in
      train mode; otherwise it is in eval mode.
    - the processor's pixel budget is the recipe's (`cfg.model.min_pixels` / `max_pixels`), so a hub
      processor with Qwen's large defaults is brought to the run's setting.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    configure_cpu_threads()
    src = str(path)
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(cfg.model.torch_dtype if cfg else "float32", device),
        "attn_implementation": cfg.model.attn_implementation if cfg else "sdpa",
    }
    if device is None and torch.cuda.is_available() and not for_training:
        kwargs["device_map"] = "auto"
    model = AutoModelForImageTextToText.from_pretrained(src, **kwargs)
    if device is not None:
        model = model.to(device)
    processor = AutoProcessor.from_pretrained(src)
    if cfg is not None:
        apply_pixel_budget(processor, cfg.model.min_pixels, cfg.model.max_pixels)
    if for_training:
        model.train()
        if cfg is None or cfg.model.freeze_vision:
            frozen = freeze_vision(model)
            log.info("froze the vision tower (%d parameters)", frozen)
    else:
        model.eval()
    return model, processor
