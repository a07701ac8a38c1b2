"""Everything a data build depends on, as one value: :class:`BuildOptions` (and its fingerprint).

A build's output depends on the parts (sources and how many records each), the seed, the split, the
shard size, the depth and narration choices and the parity; ``fingerprint()`` is that, as JSON data, and
is stored as ``build.json`` beside the shards: a rerun resumes only a build with the same fingerprint.
How many processes build it (``workers``), where caches live and the rejection limit do not change
the result and are not part of it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.data.sources import SourceSpec

BUILD_VERSION = 2  # bump when the same options would give different bytes
ALL = 10**12  # a part's record count meaning "every item the source has"


@dataclass(frozen=True)
class Part:
    """One source of a build and the number of records wanted from it."""

    spec: SourceSpec
    num: int


@dataclass(frozen=True)
class VLMOptions:
    endpoint: str | None = None
    model: str | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 2
    tries: int = 3
    max_tokens: int = 1024
    max_side: int = 768


@dataclass(frozen=True)
class BuildOptions:
    parts: tuple[Part, ...]
    seed: int = 0
    split: str = "train"
    shard_size: int = 256
    depth: str = "auto"  # auto | gt | dav2 | colour
    depth_format: str = "npy"  # npy | png16
    depth_model: str = "depth-anything/Depth-Anything-V2-Large-hf"
    depth_revision: str | None = None
    depth_device: str = "auto"
    depth_batch_size: int = 8
    narrator: str = "template"  # template | vlm
    vlm: VLMOptions = field(default_factory=VLMOptions)
    parity: str = "fixed"
    # not part of the fingerprint:
    workers: int = 1
    max_rejections: int | None = None
    cache_dir: str | None = None

    def depth_for(self, default: str) -> str:
        """The depth choice of a part whose source's natural choice is ``default``."""
        return default if self.depth == "auto" else self.depth

    @property
    def num(self) -> int:
        return sum(p.num for p in self.parts)

    @property
    def processes(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def fingerprint(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": BUILD_VERSION,
            "parts": [{"source": p.spec.describe(), "num": p.num} for p in self.parts],
            "seed": self.seed, "split": self.split, "shard_size": self.shard_size,
            "depth": [self.depth_for(_default_depth(p.spec.name)) for p in self.parts],
            "depth_format": self.depth_format, "narrator": self.narrator, "parity": self.parity,
        }
        for p in out["parts"]:
            p["source"]["options"].pop("cache_dir", None)  # where caches live changes no byte
        if "dav2" in out["depth"]:
            out["depth_model"] = f"{self.depth_model}@{self.depth_revision or 'default'}"
        if self.narrator == "vlm":
            out["vlm"] = {"endpoint": self.vlm.endpoint, "model": self.vlm.model, "max_side": self.vlm.max_side}
        return out


def _default_depth(name: str) -> str:
    from sifthinker.data.sources import SOURCES

    return getattr(SOURCES.get(name), "default_depth", "gt")


def split_counts(total: int, shares: list[float]) -> list[int]:
    """``total`` records divided by ``shares`` (largest remainders), summing to ``total`` exactly."""
    s = sum(shares)
    raw = [total * x / s for x in shares]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: out[i] - raw[i])[: total - sum(out)]:
        out[i] += 1
    return out


def options_from_config(cfg: RunConfig, split: str, cache_dir: str | None = None) -> BuildOptions:
    """The build_data stage's options for ``split`` ("train" or "eval") from a recipe."""
    d = cfg.data
    total = d.num_train if split == "train" else d.num_eval
    seed = d.seed if split == "train" else d.eval_seed
    box_frame = d.viscot_box_frame if d.viscot_box_frame != "auto" else ("padded" if cfg.original else "pixel")
    listed = d.sources or [None]
    counts = split_counts(total, [p.share if p else 1.0 for p in listed])
    parts = []
    for part, num in zip(listed, counts, strict=True):
        name = part.name if part else d.source
        opts: dict[str, Any] = {"cache_dir": cache_dir}
        if name == "synthetic":
            opts.update(width=d.width, height=d.height)
        if name == "viscot":
            opts.update(max_per_subset=d.viscot_max_per_subset, box_frame=box_frame)
        opts["depth"] = d.depth if d.depth != "auto" else _default_depth(name)  # sources fetch colour PNGs only then
        spec = SourceSpec(name, input=part.input if part else d.input,
                          image_root=part.image_root if part else d.image_root,
                          split="all" if name == "synthetic" else split, holdout=d.holdout, seed=seed,
                          options=tuple(sorted(opts.items())))
        parts.append(Part(spec, num))
    v = d.vlm
    return BuildOptions(
        parts=tuple(p for p in parts if p.num > 0), seed=seed, split=split, shard_size=d.shard_size,
        depth=d.depth, depth_format=d.depth_format, depth_model=cfg.depth.model, depth_revision=cfg.depth.revision,
        depth_device=cfg.depth.device, depth_batch_size=cfg.depth.batch_size, narrator=d.narrator,
        vlm=VLMOptions(**asdict(v)), parity=cfg.parity, workers=d.workers, cache_dir=cache_dir,
    )


__all__ = ["ALL", "BUILD_VERSION", "BuildOptions", "Part", "VLMOptions", "options_from_config", "replace", "split_counts"]
