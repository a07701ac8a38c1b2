"""What a registered model version records about where it came from: lineage tags and their helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig
from sifthinker.names import Env

__all__ = ["dir_hash", "flatten", "lineage_from_metadata"]


def lineage_from_metadata(cfg: RunConfig, metadata: dict[str, Any], model_uri: str, pipeline_run: str) -> dict:
    """The lineage tags of a model version from its KFP model artifact's metadata (training stages write
    ``train_data``, ``base_model``, ``sft_model``, ``parent_runs``)."""
    return {"data_dir": metadata.get("train_data", ""), "base_model": metadata.get("base_model", cfg.model.base),
            "sft_model": metadata.get("sft_model", ""), "model_artifact": model_uri, "recipe": cfg.name,
            "parent_runs": {k: v for k, v in dict(metadata.get("parent_runs") or {}).items() if v},
            "pipeline_run": os.environ.get(Env.PIPELINE_RUN) or pipeline_run}


# ---- helpers ---------------------------------------------------------------------------------------


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def dir_hash(path: str | Path) -> str:
    """SHA-256 over the relative paths and contents of every file under ``path`` (sorted)."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
