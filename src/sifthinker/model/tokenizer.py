"""A byte-level BPE tokenizer with Qwen2.5-VL's special tokens, trained locally on the run's corpus.

The tiny model cannot download Qwen's 151k-token vocabulary, so it gets its own small vocabulary,
trained with `tokenizers` on the prompts and traces it will see. Everything else matches Qwen2:
NFC normalisation, Qwen's pre-tokenisation regex (one token per digit), byte-level BPE and the same
special-token strings. It is wrapped in transformers' `Qwen2Tokenizer`, the class Qwen2.5-VL-7B's
processor loads, so a saved tiny model goes through the same loading code as the real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer

# The special tokens of Qwen2.5-VL, in Qwen's order (ids 151643..151656 there; 0..13 here).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"  # Qwen2.5-VL-Instruct ends an assistant turn (and generation) with <|im_end|>


def _qwen_pretokenize_regex() -> str:
    """Qwen2's pre-tokenisation regex, taken from the installed transformers so both always agree.

    `Qwen2Tokenizer` rebuilds its pre-tokenizer from this regex when it loads, whatever tokenizer.json
    says, so training with any other split would make the merges disagree with tokenisation at load.
    """
    from transformers.models.qwen2 import tokenization_qwen2

    return tokenization_qwen2.PRETOKENIZE_REGEX


def _backend(vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None) -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
                    if vocab is not None else models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_qwen_pretokenize_regex()), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(corpus: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE backend on `corpus` with the special tokens at ids 0..13.

    The full 256-byte alphabet is always in the vocabulary, so any text (other languages, unseen
    symbols) still tokenises, just into more pieces.
    """
    floor = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < floor:
        raise ValueError(f"vocab_size {vocab_size} is below the {floor} tokens every byte-level vocabulary needs")
    tok = _backend()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer(corpus: Iterable[str], vocab_size: int, model_max_length: int = 8192) -> Qwen2Tokenizer:
    """A `Qwen2Tokenizer` over a BPE vocabulary trained on `corpus` (pad <|endoftext|>, eos <|im_end|>)."""
    from transformers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    trained = json.loads(train_bpe(corpus, vocab_size).to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        errors="replace",
    )
    # Special tokens must never be split or merged by BPE: register them as added special tokens (their
    # ids are already in the trained vocabulary, so the vocabulary size does not change).
    extra = [t for t in SPECIAL_TOKENS if t not in (PAD_TOKEN, EOS_TOKEN)]
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [AddedToken(t, special=True, normalized=False) for t in extra]}
    )
    return tokenizer
