"""GRPO step throughput and actor MFU on one GPU, for a randomly initialised Qwen2.5-VL-3B- or 7B-sized model.

    python benchmarks/train_step_gpu.py --model 7b [--prompts 2 --generations 8 --completion 512 --steps 3]
    python benchmarks/train_step_gpu.py --model tiny --device cpu --steps 1     # a smoke run of the code path

One GRPO-SIF step, shaped as the recipes run it: ``prompts`` prompts, each with the RGB and the depth image
(``--image-size`` pixels a side) and a short question; ``generations`` sampled completions of exactly
``completion`` tokens each (rollouts: HF ``generate``, random weights never stop early); the reference
model's log-probabilities (a forward pass, no gradient; KL beta > 0); the actor's forward and backward pass
over every prompt + completion (activation checkpointing, bf16; the frozen vision tower runs forward only).
The optimiser step is left out (it does not grow with tokens). No weights are downloaded: the model is
built from its published configuration with random weights, which changes nothing in the arithmetic.

Reported, per GPU: rollout tokens/s; update tokens/s; whole-step tokens/s (prompt + completion tokens of
the step over its wall time, the number EasyR1 reports); actor MFU = model FLOPs of the update / (time x
peak bf16 FLOP/s), model FLOPs = 6 N_lm T + 12 L H S T (attention) + 2 N_vis P (frozen vision tower over
P patches). Anchor: EasyR1 reports about 2,000 tokens/s per GPU and 23% actor MFU for Qwen2.5-VL-7B GRPO on
8 H100 (vLLM rollouts). Record results in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import time

# Published Qwen2.5-VL shapes (config.json of Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct).
TEXT = {
    "3b": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "7b": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False},
    "tiny": {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False},
}
VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
          "fullatt_block_indexes": [7, 15, 23, 31]}
TINY_VISION = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "fullatt_block_indexes": [0]}
PATCH, MERGE, TEMPORAL = 14, 2, 2
IMAGE_PAD, VISION_START, VISION_END = 151655, 151652, 151653
# Dense bf16 peak FLOP/s by device name (vendor data sheets, SXM parts).
PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def build(size: str, device: str):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(TEXT[size])
    tie = text.pop("tie_word_embeddings")
    vocab = text["vocab_size"]
    ids = (IMAGE_PAD, VISION_START, VISION_END) if vocab > IMAGE_PAD else (vocab - 3, vocab - 2, vocab - 1)
    vision = {**(TINY_VISION if size == "tiny" else VISION), "patch_size": PATCH, "spatial_merge_size": MERGE,
              "temporal_patch_size": TEMPORAL, "window_size": 112, "out_hidden_size": text["hidden_size"]}
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    # M-RoPE splits each head's rotary half into (time, height, width) sections: Qwen's [16, 24, 24] of 64.
    sec = [head_dim // 8, 3 * head_dim // 16, head_dim // 2 - head_dim // 8 - 3 * head_dim // 16]
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": sec}
    cfg = Qwen2_5_VLConfig(text_config={**text, "max_position_embeddings": 32768, "rope_parameters": rope},
                           vision_config=vision,
                           image_token_id=ids[0], vision_start_token_id=ids[1], vision_end_token_id=ids[2],
                           tie_word_embeddings=tie)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(dtype)
    model.config.use_cache = True
    return model, ids


def batch(ids: tuple[int, int, int], prompts: int, image_size: int, question: int, vocab: int, device: str):
    """Token ids and pixel patches of ``prompts`` prompts with two images each (RGB and depth)."""
    import torch

    side = image_size // PATCH
    merged = (side // MERGE) ** 2
    per_image = [ids[1], *([ids[0]] * merged), ids[2]]
    g = torch.Generator().manual_seed(0)
    rows = [per_image * 2 + torch.randint(10, min(vocab - 4, 150000), (question,), generator=g).tolist()
            for _ in range(prompts)]
    input_ids = torch.tensor(rows, device=device)
    n_img = 2 * prompts
    pixel_values = torch.randn(n_img * side * side, 3 * TEMPORAL * PATCH * PATCH, generator=g).to(device)
    grid = torch.tensor([[1, side, side]] * n_img, device=device)
    return input_ids, pixel_values, grid


def _is_vision(name: str) -> bool:
    return ".visual." in f".{name}"  # model.visual.* (transformers 5) or visual.* (4.x)


def params(model) -> tuple[int, int]:
    vis = sum(p.numel() for n, p in model.named_parameters() if _is_vision(n))
    return sum(p.numel() for p in model.parameters()) - vis, vis


def step(model, ids, args, device) -> dict[str, float]:
    import torch

    cfg = model.config.text_config
    input_ids, pixels, grid = batch(ids, args.prompts, args.image_size, args.question, cfg.vocab_size, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    model.eval()
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():  # rollouts
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixels,
                             image_grid_thw=grid, do_sample=True, temperature=1.0, max_new_tokens=args.completion,
                             min_new_tokens=args.completion, num_return_sequences=args.generations,
                             eos_token_id=None, pad_token_id=0)
    sync()
    t_gen = time.perf_counter() - t0
    seqs = out  # (prompts x generations, prompt + completion)
    pix = pixels.repeat(args.generations, 1)
    grid_all = grid.repeat(args.generations, 1)
    n_seq, seq_len = seqs.shape
    t0 = time.perf_counter()
    with torch.no_grad():  # the reference model's log-probs (same weights: the cost is what matters)
        for i in range(0, n_seq, args.micro_batch):
            _forward(model, seqs, pix, grid_all, i, args.micro_batch, args.generations, args.prompts)
    sync()
    t_ref = time.perf_counter() - t0
    model.train()
    model.gradient_checkpointing_enable()
    for n, p in model.named_parameters():  # frozen vision tower, as the recipes train
        if _is_vision(n):
            p.requires_grad_(False)
    t0 = time.perf_counter()
    for i in range(0, n_seq, args.micro_batch):
        logits = _forward(model, seqs, pix, grid_all, i, args.micro_batch, args.generations, args.prompts)
        logits.float().logsumexp(-1).mean().backward()
    sync()
    t_upd = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_disable()
    n_lm, n_vis = params(model)
    tokens = n_seq * seq_len
    patches = int(pix.shape[0])
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    flops = 6 * n_lm * tokens + 12 * layers * hidden * seq_len * tokens + 2 * n_vis * patches
    return {"gen_s": t_gen, "ref_s": t_ref, "update_s": t_upd, "tokens": tokens, "seq_len": seq_len,
            "completion_tokens": n_seq * args.completion, "update_flops": flops, "params_lm": n_lm, "params_vision": n_vis}


def _forward(model, seqs, pix, grid, i, mb, gens, prompts):
    """Logits of sequences [i, i+mb); each sequence's two images are rows 2j, 2j+1 of pix/grid's images."""
    import torch

    rows = range(i, min(i + mb, seqs.shape[0]))
    side = int(grid[0, 1])
    per_image = side * side
    img_rows = [2 * r + k for r in rows for k in (0, 1)]
    pv = torch.cat([pix[j * per_image:(j + 1) * per_image] for j in img_rows])
    return model(input_ids=seqs[i:i + mb], attention_mask=torch.ones_like(seqs[i:i + mb]), pixel_values=pv,
                 image_grid_thw=grid[img_rows]).logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(TEXT), default="7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step (each with RGB + depth images)")
    p.add_argument("--generations", type=int, default=8, help="rollouts per prompt (the GRPO group)")
    p.add_argument("--completion", type=int, default=512, help="tokens generated per rollout")
    p.add_argument("--question", type=int, default=64, help="text tokens of the question")
    p.add_argument("--image-size", type=int, default=448, help="pixels a side of each image (448: 256 tokens)")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per forward/backward pass")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: by device name)")
    args = p.parse_args()

    import torch

    model, ids = build(args.model, args.device)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK.items() if k in name), None)
    step(model, ids, args, args.device)  # warm-up: kernels, allocator, autotuning
    runs = [step(model, ids, args, args.device) for _ in range(args.steps)]
    best = min(runs, key=lambda r: r["gen_s"] + r["ref_s"] + r["update_s"])
    total = best["gen_s"] + best["ref_s"] + best["update_s"]
    row = {"device": name, "model": args.model, "params_lm_b": round(best["params_lm"] / 1e9, 2),
           "params_vision_b": round(best["params_vision"] / 1e9, 2), "prompts": args.prompts,
           "generations": args.generations, "seq_len": best["seq_len"], "completion": args.completion,
           "rollout_tok_s": round(best["completion_tokens"] / best["gen_s"], 1),
           "update_tok_s": round(best["tokens"] / best["update_s"], 1),
           "step_tok_s": round(best["tokens"] / total, 1),
           "gen_s": round(best["gen_s"], 2), "ref_s": round(best["ref_s"], 2), "update_s": round(best["update_s"], 2),
           "actor_mfu": round(best["update_flops"] / best["update_s"] / peak, 4) if peak else None}
    print(json.dumps(row))
    keys = ["device", "model", "seq_len", "rollout_tok_s", "update_tok_s", "step_tok_s", "actor_mfu"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
