"""Build the tiny Qwen2.5-VL: real architecture and processor, random weights, locally trained vocabulary.

It exists so the whole pipeline (SFT, GRPO, evaluation, serving) runs on a CPU in minutes through the
exact code path of Qwen2.5-VL-7B: `Qwen2_5_VLConfig` with a tiny text model and a tiny but structurally
real vision tower (14-pixel patches, 2x2 spatial merge, temporal patch 2, window attention), the real
`Qwen2_5_VLProcessor`, and a `save_pretrained` folder that `load_model` reads like a hub checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from sifthinker.config.model_config import TinyModelConfig
from sifthinker.config.run_config import RunConfig
from sifthinker.model.chat_template import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT
from sifthinker.model.location_tokens import add_location_tokens, init_location_embeddings
from sifthinker.model.tokenizer import EOS_TOKEN, PAD_TOKEN, build_tokenizer

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2Tokenizer

log = logging.getLogger(__name__)

# Bump when the builder changes in a way that changes the saved model, so cached builds are not reused.
BUILDER_VERSION = 1
PATCH_SIZE = 14
SPATIAL_MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MAX_POSITIONS = 8192


def mrope_section(head_dim: int) -> list[int]:
    """Split of the rotary half-dimension over (time, height, width), in Qwen's 16:24:24 proportion.

    Qwen2.5-VL's 128-dim heads use [16, 24, 24] (sum = head_dim / 2); smaller heads keep the ratio.
    """
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_config(tiny: TinyModelConfig, vocab_size: int, token_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    """The `Qwen2_5_VLConfig` of the tiny model (vocabulary ids come from the trained tokenizer)."""
    from transformers import Qwen2_5_VLConfig

    if tiny.hidden_size % tiny.num_heads or tiny.num_heads % tiny.num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
    if tiny.vision_hidden_size % tiny.vision_heads or (tiny.vision_hidden_size // tiny.vision_heads) % 4:
        raise ValueError("vision head size (vision_hidden_size / vision_heads) must be a multiple of 4 (2D rope)")
    head_dim = tiny.hidden_size // tiny.num_heads
    text = {
        "vocab_size": vocab_size,
        "hidden_size": tiny.hidden_size,
        "intermediate_size": tiny.intermediate_size,
        "num_hidden_layers": tiny.num_layers,
        "num_attention_heads": tiny.num_heads,
        "num_key_value_heads": tiny.num_kv_heads,
        "max_position_embeddings": MAX_POSITIONS,
        "max_window_layers": tiny.num_layers,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(tiny.rope_theta),
                            "mrope_section": mrope_section(head_dim)},
        "bos_token_id": token_ids[PAD_TOKEN],
        "eos_token_id": token_ids[EOS_TOKEN],
        "pad_token_id": token_ids[PAD_TOKEN],
    }
    vision = {
        "depth": tiny.vision_depth,
        "hidden_size": tiny.vision_hidden_size,
        "intermediate_size": 2 * tiny.vision_hidden_size,
        "num_heads": tiny.vision_heads,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": SPATIAL_MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "window_size": 112,  # Qwen's value: 112 px windows = 4x4 merged tokens
        "out_hidden_size": tiny.hidden_size,
        # Qwen2.5-VL alternates window attention with a full-attention block every 8 blocks; the last
        # block of the tiny tower is the full-attention one.
        "fullatt_block_indexes": [tiny.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=tiny.tie_word_embeddings,
    )


def build_processor(tokenizer: Qwen2Tokenizer, min_pixels: int, max_pixels: int) -> Qwen2_5_VLProcessor:
    """The real `Qwen2_5_VLProcessor` with our tokenizer and chat template and the run's pixel budget."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    common = {"min_pixels": min_pixels, "max_pixels": max_pixels, "patch_size": PATCH_SIZE,
              "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": SPATIAL_MERGE_SIZE}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**common),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(cfg: RunConfig, out_dir: Path, corpus: Iterable[str]) -> Path:
    """Build the tiny model into `out_dir` (model, processor, tokenizer, chat template); returns out_dir.

    `corpus` is the text the tokenizer is trained on (prompts and traces of the training records). The
    chat template's fixed strings are added to it so that they always tokenise compactly.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    tiny = cfg.model.tiny
    texts = [*corpus, DEFAULT_SYSTEM_PROMPT, "system\nuser\nassistant\n"]
    tokenizer = build_tokenizer(texts, tiny.vocab_size, model_max_length=MAX_POSITIONS)
    loc_ids = add_location_tokens(tokenizer) if tiny.location_tokens else []
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    # The embedding may be larger than the vocabulary (as in Qwen: 152064 rows for 151665 tokens), never smaller.
    vocab = max(tiny.vocab_size, len(tokenizer))
    config = tiny_config(tiny, vocab, ids)
    processor = build_processor(tokenizer, cfg.model.min_pixels, cfg.model.max_pixels)

    # Seeded random init: the same recipe and corpus always give the same starting weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    if loc_ids:
        init_location_embeddings(model, loc_ids, seed=tiny.seed)
    if tiny.pretrain_steps:
        from sifthinker.model.pretrain import copy_pretrain

        copy_pretrain(model, tokenizer, texts, tiny.pretrain_steps, seed=tiny.seed)
    if tiny.ground_steps:
        from sifthinker.model.ground_pretrain import grounding_pretrain

        grounding_pretrain(model, processor, tiny.ground_steps, cfg.data.width, cfg.data.height, seed=tiny.seed)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[PAD_TOKEN],
        eos_token_id=[ids[EOS_TOKEN], ids[PAD_TOKEN]],  # Qwen2.5-VL-Instruct stops on either
        pad_token_id=ids[PAD_TOKEN],
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built tiny Qwen2.5-VL (%d parameters, vocabulary %d) in %s", n_params, len(tokenizer), out_dir)
    return out_dir


# ---- cached base model -----------------------------------------------------------------------------
def corpus_from_records(records: list[dict]) -> Iterator[str]:
    """The tokenizer corpus of a record list: every user prompt and assistant trace."""
    from sifthinker.method.prompts import prompt_text

    for rec in records:
        for msg in rec.get("messages", []):
            if isinstance(msg.get("content"), str):
                # Qwen's chat form writes the image placeholders as vision tokens, not "<image>".
                yield msg["content"].replace("<image>", "")
        if rec.get("problem"):
            yield prompt_text(rec["problem"]).replace("<image>", "")


def _read_corpus(corpus_dir: Path) -> list[str]:
    path = Path(corpus_dir) / "records.json"
    if not path.is_file():
        raise FileNotFoundError(f"no records.json in {corpus_dir}: the tiny model's tokenizer needs a corpus")
    return list(corpus_from_records(json.loads(path.read_text())))


def tiny_fingerprint(cfg: RunConfig, corpus: list[str]) -> str:
    """A short hash of everything that determines the built model: tiny config, pixels, corpus, builder."""
    h = hashlib.sha256()
    meta = {"tiny": asdict(cfg.model.tiny), "min_pixels": cfg.model.min_pixels,
            "max_pixels": cfg.model.max_pixels, "builder": BUILDER_VERSION,
            "scenes": [cfg.data.width, cfg.data.height] if cfg.model.tiny.ground_steps else None}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for text in corpus:
        h.update(text.encode("utf-8"))
        h.update(b"\0")  # keeps ["ab", "c"] apart from ["a", "bc"]
    return h.hexdigest()[:16]


def ensure_base_model(cfg: RunConfig, corpus_dir: Path) -> Path | str:
    """The base model for SFT: the cached tiny model (built on first use) or `cfg.model.base` untouched.

    The tiny model is built once per (tiny config, corpus) into
    `<work>/<cache_dir>/tiny-qwen2.5-vl-<hash>`; the build goes to a temporary folder that is renamed
    into place, so a crashed or concurrent build never leaves a half-written model behind.
    """
    if cfg.model.base != "tiny":
        return cfg.model.base
    corpus = _read_corpus(corpus_dir)
    cache = cfg.path(cfg.model.cache_dir)
    target = cache / f"tiny-qwen2.5-vl-{tiny_fingerprint(cfg, corpus)}"
    if (target / "config.json").is_file():
        log.info("reusing tiny base model %s", target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        build_tiny_model(cfg, tmp, corpus)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
