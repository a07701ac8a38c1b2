"""Location tokens of the tiny tokenizer (sifthinker.model.location_tokens) and the image-use diagnostics
(sifthinker.model.image_use)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sifthinker.config.run_config import RunConfig
from sifthinker.model.base_probe import format_probe
from sifthinker.model.ground_pretrain import grounding_item, vlm_batch
from sifthinker.model.image_use import image_feature_norm, image_reliance, image_use_metrics
from sifthinker.model.loading import load_model
from sifthinker.model.location_tokens import GRID, add_location_tokens, location_strings, ordinal_rows
from sifthinker.model.tiny import build_tiny_model, tiny_fingerprint
from sifthinker.model.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[2]
W, H = 320, 240


def test_the_grid_is_written_as_the_traces_write_numbers():
    strings = location_strings()
    assert len(strings) == len(set(strings)) == GRID + 1
    assert strings[0] == "0.0" and strings[500] == "0.5" and strings[588] == "0.588" and strings[-1] == "1.0"
    assert [json.loads(s) for s in strings] == [round(k / GRID, 3) for k in range(GRID + 1)]


def test_each_coordinate_is_one_token_and_the_text_comes_back_unchanged():
    targets = [grounding_item(s, W, H)[1] for s in range(20)]
    tok = build_tokenizer(targets, 400)
    digits = [len(tok(t)["input_ids"]) for t in targets]
    ids = add_location_tokens(tok)
    assert len(ids) == GRID + 1 and tok.convert_ids_to_tokens(ids[588]) == "0.588"
    for target, before in zip(targets, digits, strict=True):
        enc = tok(target)["input_ids"]
        assert tok.decode(enc) == target
        values = json.loads(target.split(": ", 1)[1])[0]
        numbers = [*values["bbox_2d"], values["depth"]]
        for v in numbers:  # every coordinate and the depth: one token each
            assert ids[round(v * GRID)] in enc
        assert len(enc) <= before - len(numbers)  # each value was >= 2 digit tokens plus "0."
    # Other numbers still tokenise and decode to themselves.
    for text in ("0.5883 and 10.05, x1.0y", "[0.0,0.05,1.0,0.999]", "There are 3 objects."):
        assert tok.decode(tok(text)["input_ids"]) == text


def test_ordinal_rows_are_smooth_in_the_value():
    import torch

    rows = ordinal_rows(GRID + 1, 64, 0.5)
    assert torch.allclose(rows.norm(dim=1), torch.full((GRID + 1,), 0.5), atol=1e-5)
    cos = torch.nn.functional.cosine_similarity
    near = cos(rows[:-1], rows[1:]).mean()
    far = cos(rows[:-500], rows[500:]).mean()
    assert near > 0.95 and far < near - 0.3


def _cfg(location_tokens: bool) -> RunConfig:
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.model.tiny.hidden_size, cfg.model.tiny.intermediate_size = 32, 64
    cfg.model.tiny.pretrain_steps = cfg.model.tiny.ground_steps = 0
    cfg.model.tiny.location_tokens = location_tokens
    cfg.model.freeze_vision = False
    return cfg


@pytest.fixture(scope="module")
def loc_model(tmp_path_factory):
    corpus = [" ".join(grounding_item(s, W, H)[:2]) for s in range(30)]
    folder = build_tiny_model(_cfg(True), tmp_path_factory.mktemp("loc") / "m", corpus)
    return folder, corpus


def test_the_builder_adds_them_with_ordinal_rows_and_the_model_trains_on_them(loc_model):
    import torch

    folder, corpus = loc_model
    assert tiny_fingerprint(_cfg(True), corpus) != tiny_fingerprint(_cfg(False), corpus)
    model, proc = load_model(folder, _cfg(True), for_training=True)
    ids = proc.tokenizer.convert_tokens_to_ids(location_strings())
    assert model.get_input_embeddings().weight.shape[0] >= len(proc.tokenizer) > max(ids)
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        rows = layer.weight[ids].detach()
        cos = torch.nn.functional.cosine_similarity
        assert cos(rows[:-1], rows[1:]).mean() > 0.95  # neighbours start alike (a random row would be ~0)
    items = [grounding_item(s, W, H) for s in (1, 2)]
    enc = vlm_batch(proc, items)
    for row, labels, (_, target, _) in zip(enc["input_ids"], enc["labels"], items, strict=True):
        kept = [t for t, lab in zip(row.tolist(), labels.tolist(), strict=True) if lab != -100]
        assert proc.tokenizer.decode(kept).startswith(target + "<|im_end|>")
        assert sum(t in set(ids) for t in kept) == 5  # 4 box coordinates and the depth
    loss = model(**enc).loss
    loss.backward()
    assert model.get_output_embeddings().weight.grad[ids].abs().sum() > 0


def test_image_reliance_is_zero_when_the_images_are_alike_and_not_otherwise(loc_model):
    folder, _ = loc_model
    model, proc = load_model(folder, _cfg(True), for_training=True)
    items = [grounding_item(s, W, H) for s in range(3)]
    same = [(q, a, items[0][2]) for q, a, _ in items]
    assert image_reliance(model, proc, same)["gap"] == 0.0
    differ = image_reliance(model, proc, items)
    assert differ["gap"] != 0.0 and differ["loss_shuffled"] == pytest.approx(differ["loss"] + differ["gap"])
    assert model.training  # left as found
    norms = image_feature_norm(model, proc, [items[0][2][0]])
    assert norms["vision"] > 0 and norms["text"] > 0
    with pytest.raises(ValueError, match="at least 2"):
        image_reliance(model, proc, items[:1])
    # The pre-training's probe logs them under image/ and prints them.
    metrics = image_use_metrics(model, proc, items)
    assert metrics["image/gap"] == pytest.approx(differ["gap"]) and metrics["image/vision_norm"] == norms["vision"]
    assert "image loss gap" in format_probe(3, metrics)
