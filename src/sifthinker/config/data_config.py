"""The recipe's ``data`` and ``depth`` sections (``DataConfig``, ``DepthConfig``), used by
:mod:`sifthinker.config.run_config`; kept apart only so that each module stays small. Same conventions: every field
carries ``help`` and its constraints, checked by :mod:`sifthinker.config.schema` when a recipe loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sifthinker.config.schema import ConfigError
from sifthinker.config.schema import doc_field as _f
from sifthinker.names import DEPTH_PROVIDERS

# The data build's sources (sifthinker.data.sources), depth choices and narrators; "mix" combines `sources`.
DATA_SOURCES = ("synthetic", "sif50k", "viscot", "tallyqa", "jsonl")
BUILD_DEPTH = ("auto", "gt", "dav2", "colour")
NARRATORS = ("template", "vlm")


@dataclass
class SourcePart:
    """One source of a mixed build (``data.source: mix``), e.g. Visual-CoT plus TallyQA for SIF-50K."""

    name: str = _f(help="Source name.", choices=DATA_SOURCES)
    input: str | None = _f(None, "Its input file or folder (local or s3://).", nonempty=True)
    image_root: str | None = _f(None, "Folder its image paths are relative to (default: beside the input).",
                                nonempty=True)
    share: float = _f(1.0, "Its share of each split's records (shares are normalised over the parts).", gt=0)


@dataclass
class VLMNarratorConfig:
    """The VLM narrator (``data.narrator: vlm``): any OpenAI-compatible chat endpoint."""

    endpoint: str | None = _f(None, "Base URL of the OpenAI-compatible API (.../v1); $OPENAI_API_KEY is sent "
                                    "as a bearer token when set.", nonempty=True)
    model: str | None = _f(None, "Model name; null: the first model the endpoint lists.", nonempty=True)
    concurrency: int = _f(8, "Requests in flight per build worker.", ge=1)
    timeout_s: float = _f(120.0, "Seconds before a request is abandoned (then retried).", gt=0)
    retries: int = _f(2, "Retries of a failed request (timeouts, connection errors, 408/429/5xx), with "
                         "exponential backoff.", ge=0)
    tries: int = _f(3, "Narrations asked per item when a reply is not a valid trace for its frames.", ge=1)
    max_tokens: int = _f(1024, "Most tokens per reply.", ge=1)
    max_side: int = _f(768, "Longest side in pixels of the frame images sent (downscaled, never up).", ge=64)


@dataclass
class DataConfig:
    source: str = _f("synthetic", "Where items come from (docs/data.md): synthetic, sif50k, viscot, tallyqa, "
                                  "jsonl, or mix (the parts listed in `sources`).", nonempty=True)
    num_train: int = _f(160, "Records in the train split.", ge=1)
    num_eval: int = _f(40, "Records in the held-out eval split.", ge=1)
    seed: int = _f(0, "Seed of the train split (same seed, same dataset).", ge=0)
    eval_seed: int = _f(100_000, "Seed of the eval split; far from `seed` so eval scenes never repeat train "
                                 "scenes.", ge=0)
    width: int = _f(320, "Width in pixels of generated images.", ge=32)
    height: int = _f(240, "Height in pixels of generated images.", ge=32)
    balance_tolerance: float = _f(0.25, "Data validation: each category's share must lie within "
                                        "(1 +- tol) / num_categories (per source, where categories are balanced "
                                        "by design).", gt=0, lt=1)
    input: str | None = _f(None, "Input file or folder of a file-backed source (e.g. viscot_363k.json), local or "
                                 "s3://.", nonempty=True)
    image_root: str | None = _f(None, "Folder the source's image paths are relative to (default: the input's "
                                      "folder), local or s3://.", nonempty=True)
    sources: list[SourcePart] = _f(help="The parts of a mixed build (source: mix), in order.", factory=list)
    holdout: float = _f(0.02, "File-backed sources: share of items (by a hash of their id) kept for the eval "
                              "split; train never sees them.", gt=0, lt=1)
    depth: str = _f("auto", "Depth maps: gt (the source's own), dav2 (Depth-Anything-V2, the `depth` section), colour "
                            "(decode a colour depth PNG), auto (gt for synthetic, colour for sif50k, dav2 else).",
                    choices=BUILD_DEPTH)
    depth_format: str = _f("npy", "How float depth maps are stored: npy (float16) or png16 (16-bit PNG).",
                           choices=("npy", "png16"))
    narrator: str = _f("template", "Step texts: template (offline, from the source's facts) or vlm.",
                       choices=NARRATORS)
    vlm: VLMNarratorConfig = _f(help="The VLM narrator's endpoint and limits.", factory=VLMNarratorConfig)
    workers: int = _f(1, "Build worker processes (0: one per core).", ge=0)
    shard_size: int = _f(256, "Source items per shard (the unit of parallel work and of resuming).", ge=1)
    viscot_max_per_subset: int = _f(10_000, "Visual-CoT: at most this many items per kept subset, first in file "
                                            "order (the paper: 10k).", ge=1)
    viscot_box_frame: str = _f("auto", "Visual-CoT boxes: pixel (the square-padded normalised box converted to "
                                       "the image, fix D1), padded (read per axis: the original's misreading), "
                                       "auto (padded under parity original, else pixel).",
                               choices=("auto", "pixel", "padded"))

    def __post_init__(self) -> None:
        if self.source.strip() and self.source not in (*DATA_SOURCES, "mix"):  # empty: the schema says so
            raise ConfigError(f"recipe.data.source: must be one of {[*DATA_SOURCES, 'mix']}, got {self.source!r}")
        if (self.source == "mix") != bool(self.sources):
            raise ConfigError("recipe.data.sources: give the parts with source: mix (and only then)")
        if self.sources and (self.input or self.image_root):
            raise ConfigError("recipe.data: input and image_root belong to each part of `sources` in a mix")


@dataclass
class DepthConfig:
    provider: str = _f("depth-anything-v2", "How the colour depth image is made for an RGB image that has none "
                                            "(benchmarks, serving): depth-anything-v2 or fake-gradient (a named "
                                            "fake for tests and CPU smoke runs, not a depth model).",
                       choices=DEPTH_PROVIDERS)
    model: str = _f("depth-anything/Depth-Anything-V2-Large-hf", "Depth-Anything-V2 weights: a local folder or a "
                                                                 "hub id (hub ids need network access).", nonempty=True)
    device: str = _f("auto", "Where the depth model runs: auto (GPU when present), cpu, cuda, cuda:N.", nonempty=True)
    revision: str | None = _f(None, "Hub revision (commit, tag or branch) of `model`; null: the default.",
                              nonempty=True)
    batch_size: int = _f(8, "Images per Depth-Anything-V2 batch in the data build.", ge=1)


