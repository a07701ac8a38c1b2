"""The tiny Qwen2.5-VL: tokenizer, chat template, build/save/reload through load_model, generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("transformers")

from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.method.prompts import INSTRUCTION, chat_messages  # noqa: E402
from sifthinker.model import GenRequest, build_tiny_model, ensure_base_model, generate, load_model  # noqa: E402
from sifthinker.model.tiny import mrope_section, tiny_fingerprint  # noqa: E402
from sifthinker.model.tokenizer import SPECIAL_TOKENS, build_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TRACE = (
    '<think>\n<area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area>\n<text>I look over the whole image.</text>\n'
    '<area>[{"bbox_2d":[0.125,0.25,0.5,0.75],"depth":0.3}]</area>\n<text>Here is the red cube.</text>\n'
    "</think>\n<answer>red cube</answer>"
)
CORPUS = [TRACE, f"Original image: \nDepth image: \nWhich is closer to the camera? {INSTRUCTION}"] * 5


def small_cfg() -> RunConfig:
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    cfg.model.tiny.hidden_size, cfg.model.tiny.intermediate_size = 32, 64  # fast tests; same structure
    cfg.model.tiny.pretrain_steps = 0  # structure tests; the copy pre-training has its own test
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(small_cfg(), tmp_path_factory.mktemp("tiny") / "model", CORPUS)


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_model(tiny, small_cfg())


def images(color=(200, 30, 30), size=(320, 240)) -> tuple[Image.Image, Image.Image]:
    return Image.new("RGB", size, color), Image.new("RGB", size, (30, 30, 200))


def test_tokenizer_has_qwen_special_tokens_and_round_trips():
    tok = build_tokenizer(CORPUS, 400)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))  # one id each, never split
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "<|im_start|>user\nÜnïcode 0.125 <|image_pad|><|im_end|>"
    enc = tok(text)["input_ids"]
    assert tok.decode(enc) == text
    assert enc.count(tok.convert_tokens_to_ids("<|image_pad|>")) == 1
    assert len(tok) <= 400


def test_mrope_section_covers_half_the_head():
    assert mrope_section(128) == [16, 24, 24]  # Qwen2.5-VL-7B's split
    for head_dim in (8, 16, 32, 64):
        assert sum(mrope_section(head_dim)) == head_dim // 2


def test_tiny_config_carries_rope_theta_and_tied_embeddings():
    from sifthinker.model.tiny import tiny_config

    tok = build_tokenizer(CORPUS, 400)
    ids = {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    cfg = small_cfg()
    default = tiny_config(cfg.model.tiny, 400, ids)
    assert default.text_config.rope_parameters["rope_theta"] == 1_000_000.0  # Qwen2.5-VL's base
    assert default.tie_word_embeddings is False
    cfg.model.tiny.rope_theta, cfg.model.tiny.tie_word_embeddings = 50.0, True
    changed = tiny_config(cfg.model.tiny, 400, ids)
    assert changed.text_config.rope_parameters["rope_theta"] == 50.0
    assert changed.tie_word_embeddings is True


def test_saved_folder_reloads_through_load_model(tiny, loaded):
    model, processor = loaded
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in tiny.iterdir()
    }
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    vc = model.config.vision_config
    assert (vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size) == (14, 2, 2)
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert not model.training
    size = processor.image_processor.size
    assert (size.shortest_edge, size.longest_edge) == (56 * 56, 112 * 112)


def test_two_images_expand_to_the_expected_pad_tokens(loaded):
    model, processor = loaded
    rgb, depth = images(size=(320, 240))
    text = processor.apply_chat_template(chat_messages("Q?"), tokenize=False, add_generation_prompt=True)
    out = processor(text=[text], images=[[rgb, depth]], return_tensors="pt")
    grid = out["image_grid_thw"]
    assert grid.tolist() == [[1, 6, 8], [1, 6, 8]]  # 320x240 -> 112x84 px under max_pixels 112*112
    expected = int((grid.prod(-1) // 4).sum())  # 2x2 spatial merge
    assert int((out["input_ids"] == model.config.image_token_id).sum()) == expected == 24
    vs = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert int((out["input_ids"] == vs).sum()) == 2


def test_chat_template_layout_is_qwen25vl(loaded):
    _, processor = loaded
    text = processor.apply_chat_template(chat_messages("Is it red?", "<answer>yes</answer>"), tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nOriginal image: <|vision_start|><|image_pad|><|vision_end|>\n"
        f"Depth image: <|vision_start|><|image_pad|><|vision_end|>\nIs it red? {INSTRUCTION}<|im_end|>\n"
        "<|im_start|>assistant\n<answer>yes</answer><|im_end|>\n"
    )
    prompt = processor.apply_chat_template(chat_messages("Is it red?"), tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
    plain = processor.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], tokenize=False
    )
    assert plain == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_assistant_mask_covers_the_trace_and_its_stop_token(loaded):
    _, processor = loaded
    rgb, depth = images()
    msgs = chat_messages("Q?", TRACE)
    msgs[0]["content"][1]["image"], msgs[0]["content"][3]["image"] = rgb, depth
    out = processor.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    assert processor.tokenizer.decode(masked) == TRACE + "<|im_end|>"


def _greedy_by_hand(model, processor, req: GenRequest, max_new_tokens: int) -> str:
    """Greedy decoding without generate(): one full forward pass per token, argmax of the last position,
    the image token and the embedding rows past the tokenizer barred, stopping at an end token; only the
    new tokens are decoded."""
    import torch

    tok = processor.tokenizer
    text = processor.apply_chat_template(chat_messages(req.question), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[[req.image, req.depth_image]], return_tensors="pt")
    eos = model.generation_config.eos_token_id
    stop = {tok.eos_token_id, *([eos] if isinstance(eos, int) else eos or [])}
    ids, new = inputs["input_ids"], []
    for _ in range(max_new_tokens):
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                           image_grid_thw=inputs["image_grid_thw"]).logits[0, -1].clone()
            logits[model.config.image_token_id] = -float("inf")
            logits[len(tok):] = -float("inf")  # rows no token maps to
        new.append(int(logits.argmax()))
        if new[-1] in stop:
            break
        ids = torch.cat([ids, torch.tensor([[new[-1]]])], dim=1)
    return tok.decode(new, skip_special_tokens=True).strip()


def test_generate_is_greedy_decoding_of_each_request(loaded):
    import torch

    model, processor = loaded
    rgb, depth = images()
    reqs = [GenRequest(rgb, depth, "Which is closer?"), GenRequest(*images((0, 255, 0)), "A longer question here?")]
    out = generate(model, processor, reqs, max_new_tokens=6, batch_size=2)
    # batched, left-padded generation gives what plain greedy decoding of each prompt gives
    assert out == [_greedy_by_hand(model, processor, r, 6) for r in reqs]
    assert all(out)  # the random model does write something here, so the comparison means something
    assert all("<|im_end|>" not in t and "<|image_pad|>" not in t for t in out)  # special tokens skipped
    assert generate(model, processor, reqs, max_new_tokens=6, batch_size=1) == out  # padding-invariant
    # sampling: the same seed gives the same text, another seed another text
    sampled = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        sampled.append(generate(model, processor, reqs[:1], max_new_tokens=4, temperature=1.0))
    assert sampled[0] == sampled[1] != sampled[2] and len(sampled[0]) == 1
    assert generate(model, processor, [], 4) == []


def test_load_for_training_freezes_only_the_vision_tower(tiny):
    model, _ = load_model(tiny, small_cfg(), for_training=True)
    names = [n for n, _ in model.named_parameters()]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # exactly the vision tower (the merger/projector included) is frozen: the language model and head train
    assert frozen == {n for n in names if n.startswith("model.visual.")} and len(frozen) == 18
    assert any("merger" in n for n in frozen)
    assert {n for n in names if n not in frozen} == {n for n in names if n.startswith("model.language_model.")} | {
        "lm_head.weight"}
    cfg = small_cfg()
    cfg.model.freeze_vision = False
    model, _ = load_model(tiny, cfg, for_training=True)
    assert all(p.requires_grad for p in model.parameters())


def test_ensure_base_model_builds_once_and_passes_other_bases_through(tmp_path, monkeypatch):
    monkeypatch.delenv("SIFTHINKER_WORK_DIR", raising=False)
    cfg = small_cfg()
    cfg.work_dir = str(tmp_path / "work")
    data = tmp_path / "data"
    data.mkdir()
    rec = {"problem": "Which is closer?", "messages": [{"role": "user", "content": "Original image: <image>"},
                                                       {"role": "assistant", "content": TRACE}]}
    (data / "records.json").write_text(json.dumps([rec] * 3))
    first = ensure_base_model(cfg, data)
    assert first.parent == tmp_path / "work" / "models" and first.name.startswith("tiny-qwen2.5-vl-")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert ensure_base_model(cfg, data) == first and (first / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no leftover temporary build
    cfg2 = small_cfg()
    cfg2.model.tiny.seed = 1
    assert tiny_fingerprint(cfg2, ["a"]) != tiny_fingerprint(cfg, ["a"]) != tiny_fingerprint(cfg, ["b"])
    cfg2.model.base = "Qwen/Qwen2.5-VL-7B-Instruct"
    assert ensure_base_model(cfg2, data) == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(FileNotFoundError, match="no records.json in .*nowhere: the tiny model's tokenizer needs"):
        ensure_base_model(cfg, tmp_path / "nowhere")


WORDS = "red green blue yellow purple orange gray cube sphere cylinder cone pyramid left right closer farther".split()


def _copies(model, tokenizer, spans: list[str]) -> float:
    """Share of spans the model repeats exactly (greedy) after reading them once."""
    import torch

    hits = 0
    for span in spans:
        ids = tokenizer(span + "\n", add_special_tokens=False, return_tensors="pt")["input_ids"]
        want = tokenizer(span, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(want),
                                 do_sample=False)
        hits += out[0, ids.shape[1]:].tolist() == want
    return hits / len(spans)


@pytest.mark.slow
def test_copy_pretraining_teaches_the_random_lm_to_repeat_what_it_read(tmp_path):
    import random

    r = random.Random(0)
    corpus = [" ".join(r.choice(WORDS) for _ in range(20)) for _ in range(200)]  # random word strings
    held_out = [" ".join(r.choice(WORDS) for _ in range(r.randint(4, 10))) for _ in range(20)]
    cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
    steps = cfg.model.tiny.pretrain_steps  # the demo's setting: the copy circuit forms after ~500 steps
    assert steps > 0
    cfg.model.tiny.pretrain_steps = 0
    random_dir = build_tiny_model(cfg, tmp_path / "random", corpus)
    cfg.model.tiny.pretrain_steps = steps
    trained_dir = build_tiny_model(cfg, tmp_path / "trained", corpus)
    before, proc = load_model(random_dir, cfg)
    after, _ = load_model(trained_dir, cfg)
    # Random weights repeat nothing; after pre-training the held-out spans (never seen) come back verbatim.
    assert _copies(before, proc.tokenizer, held_out) == 0.0
    assert _copies(after, proc.tokenizer, held_out) >= 0.8
