"""The recipe's ``model`` section (``ModelConfig``, ``TinyModelConfig``, ``LoraConfig``), used by
:mod:`sifthinker.config.run_config`; kept apart only so that each module stays small. Same conventions: every field
carries ``help`` and its constraints, checked by :mod:`sifthinker.config.schema` when a recipe loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sifthinker.config.schema import doc_field as _f


@dataclass
class TinyModelConfig:
    """Shape of the locally built tiny Qwen2.5-VL (random weights; only for CPU runs and tests)."""

    hidden_size: int = _f(64, "Language model hidden size.", ge=1)
    intermediate_size: int = _f(128, "Language model MLP size.", ge=1)
    num_layers: int = _f(2, "Language model layers.", ge=1)
    num_heads: int = _f(4, "Attention heads.", ge=1)
    num_kv_heads: int = _f(2, "Key/value heads (grouped-query attention).", ge=1)
    vision_hidden_size: int = _f(32, "Vision tower hidden size.", ge=1)
    vision_depth: int = _f(1, "Vision tower blocks.", ge=1)
    vision_heads: int = _f(2, "Vision tower attention heads.", ge=1)
    vocab_size: int = _f(1000, "Size of the locally trained tokenizer's vocabulary.", ge=1)
    rope_theta: float = _f(1_000_000.0, "Rotary base of the language model. Qwen's 1e6 leaves a tiny head's "
                                        "image-width rotary section (its lowest frequencies) nearly constant.", gt=1)
    tie_word_embeddings: bool = _f(False, "Share the input embedding and the output head (as Qwen2.5-VL-3B does).")
    seed: int = _f(0, "Seed of the random initial weights.", ge=0)
    location_tokens: bool = _f(False, "Add every value of the traces' 3-decimal coordinate grid (\"0.0\", "
                                      "\"0.001\", ..., \"1.0\") to the tokenizer as one token each, as "
                                      "PaliGemma's and Florence-2's location tokens (sifthinker.model."
                                      "location_tokens): a box becomes 4 predictions instead of ~16 digits; the "
                                      "trace text is unchanged. Measured in docs/benchmarks.md.")
    pretrain_steps: int = _f(0, "Steps of text pre-training on copying (sifthinker.model.pretrain) before the "
                                "model is saved: a stand-in for a hub checkpoint's pre-training. A random LM "
                                "never learns from a few hundred SFT items to copy the question's object names "
                                "into its trace; 800 steps (~50 s on 2 cores) teach it, 300 do not. 0: random "
                                "weights.", ge=0)
    ground_steps: int = _f(0, "Steps of grounding pre-training (sifthinker.model.ground_pretrain) after the "
                              "copy pre-training: 'Where is the <object>?' answered with its box and depth on "
                              "fresh synthetic scenes, vision tower trained. A stand-in for a hub checkpoint's "
                              "grounding pre-training: SFT alone never teaches the random model to read a "
                              "box off the image. Measured with rope_theta 10 (at Qwen's 1e6 a tiny head "
                              "barely tells image columns apart); 1500 steps did not teach crowded scenes "
                              "(docs/benchmarks.md). 0: none.", ge=0)


@dataclass
class LoraConfig:
    r: int = _f(8, "LoRA rank.", ge=1)
    alpha: int = _f(16, "LoRA alpha (the update is scaled by alpha / r).", ge=1)
    dropout: float = _f(0.0, "Dropout on the LoRA input.", ge=0, lt=1)
    target_modules: str | list[str] = _f("all-linear", "Modules that get adapters: 'all-linear' or a list of "
                                                       "module names.", nonempty=True)


@dataclass
class ModelConfig:
    base: str = _f("tiny", "'tiny' builds the tiny model; otherwise a hub id or a local folder.", nonempty=True)
    cache_dir: str = _f("models", "Where built and downloaded base models are kept (under work_dir).", nonempty=True)
    min_pixels: int = _f(56 * 56, "Smallest image area (pixels) after the processor's resize.", ge=1)
    max_pixels: int = _f(112 * 112, "Largest image area (pixels) after the processor's resize.",
                         ge_field="min_pixels")
    torch_dtype: str = _f("float32", "Weight dtype.", choices=("float32", "bfloat16", "float16", "auto"))
    attn_implementation: str = _f("sdpa", "transformers attention implementation (sdpa, eager, "
                                          "flash_attention_2).", nonempty=True)
    freeze_vision: bool = _f(True, "Keep the vision tower and projector frozen in training.")
    tiny: TinyModelConfig = _f(help="Shape of the tiny model (used when base is 'tiny').", factory=TinyModelConfig)
