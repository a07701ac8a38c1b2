"""Location tokens: every coordinate value of the traces' grid as one added token of the tiny tokenizer.

The traces write normalised coordinates (and box depths) with 3 decimals, as JSON numbers: ``0.588``,
``0.5``, ``1.0``. The tiny tokenizer splits every digit (Qwen's pre-tokenisation), so a box costs ~20
predictions. PaliGemma (``<loc0000>``..) and Florence-2 (``<loc_0>``..) instead give each grid value
its own token. Here the grid's 1,001 values are added to the tokenizer *as their text* (``"0.588"``), so
the trace text is unchanged: the tokenizer maps the text to the tokens and decoding gives the text back.

A token seen a few dozen times learns little on its own, so the new embedding rows (input and output) are
initialised ordinally: a random projection of sinusoidal features of the value, so that nearby values
start with similar rows and what is learnt for one carries over to its neighbours.
"""

from __future__ import annotations

import json
import math
from typing import Any

GRID = 1000  # the traces' 3-decimal grid: values k / 1000 for k = 0..1000
INIT_FREQUENCIES = 16  # sinusoidal features per value for the ordinal initialisation


def location_strings() -> list[str]:
    """The grid's values as the traces write them (JSON numbers): "0.0", "0.001", ..., "0.5", ..., "1.0"."""
    return [json.dumps(round(k / GRID, 3)) for k in range(GRID + 1)]


def add_location_tokens(tokenizer: Any) -> list[int]:
    """Add the grid's values to ``tokenizer`` as (non-special) tokens; returns their ids in grid order.

    Added tokens are split off before the byte-level BPE, longest match first, so "0.588" becomes one
    token and "0.5" another; a longer number ("0.5883") keeps its extra digits as digit tokens."""
    from transformers import AddedToken

    strings = location_strings()
    tokenizer.add_tokens([AddedToken(s, special=False, normalized=False, single_word=False, lstrip=False,
                                     rstrip=False) for s in strings])
    ids = tokenizer.convert_tokens_to_ids(strings)
    if len(set(ids)) != len(strings) or tokenizer.unk_token_id in ids:
        raise ValueError("the tokenizer did not take every location token")
    return ids


def ordinal_rows(n: int, dim: int, scale: float, seed: int = 0) -> Any:
    """``n`` x ``dim`` rows that vary smoothly with the row index (a fixed random projection of sinusoids
    of index / (n - 1) at ``INIT_FREQUENCIES`` frequencies), each row of norm ``scale``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    v = torch.linspace(0, 1, n).unsqueeze(1)
    freqs = torch.tensor([math.pi * (2 ** (i / 2)) for i in range(INIT_FREQUENCIES)]).unsqueeze(0)
    feats = torch.cat([torch.sin(v * freqs), torch.cos(v * freqs)], dim=1)
    rows = feats @ torch.randn(2 * INIT_FREQUENCIES, dim, generator=gen)
    return rows / rows.norm(dim=1, keepdim=True) * scale


def init_location_embeddings(model: Any, ids: list[int], seed: int = 0) -> None:
    """Give the location tokens' input (and, if untied, output) rows the ordinal initialisation, at the
    mean norm of the other rows so they neither dominate nor vanish."""
    import torch

    idx = torch.tensor(ids)
    mask = torch.ones(model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    mask[idx] = False
    with torch.no_grad():
        for k, layer in enumerate({id(m): m for m in (model.get_input_embeddings(),
                                                        model.get_output_embeddings()) if m is not None}.values()):
            w = layer.weight
            scale = w[mask].norm(dim=1).mean().item()
            w[idx] = ordinal_rows(len(ids), w.shape[1], scale, seed + k).to(w.dtype)
