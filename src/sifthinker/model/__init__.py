"""The model layer: the tiny Qwen2.5-VL builder, loading (one path for tiny and 7B) and generation.

Heavy imports (torch, transformers) happen inside the functions, so importing this package is cheap.

May import ``sifthinker.config``, ``data``, ``method``, ``scenes``, ``registry``, ``storage`` and ``names``.
"""

from sifthinker.model.inference import GenRequest, generate
from sifthinker.model.loading import freeze_vision, load_model, vision_tower
from sifthinker.model.tiny import build_tiny_model, corpus_from_records, ensure_base_model, tiny_fingerprint

__all__ = [
    "GenRequest",
    "build_tiny_model",
    "corpus_from_records",
    "ensure_base_model",
    "freeze_vision",
    "generate",
    "load_model",
    "tiny_fingerprint",
    "vision_tower",
]
