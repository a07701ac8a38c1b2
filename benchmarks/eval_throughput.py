"""Throughput of `sifthinker eval run` on the tiny model: items/s with batch 1 against batched generation.

Usage: .venv/bin/python benchmarks/eval_throughput.py [--items 16] [--max-new-tokens 128] [--batches 1,4,8]

Builds a SIF-Bench folder (`data build`'s eval split) and the local recipe's tiny Qwen2.5-VL (random
weights, so every completion runs to ``--max-new-tokens``), loads the model once, then for each batch
size times ``run_benchmark`` (what `eval run --model` calls: generation with the prediction cache, scoring,
report; gallery off) into a fresh folder, then reruns the last one (every item from the cache).
Prints one table row each.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from sifthinker.config.run_config import RunConfig
from sifthinker.data.build import build_dataset, load_records
from sifthinker.evaluation.generators import ModelGenerator
from sifthinker.evaluation.run import run_benchmark
from sifthinker.model import build_tiny_model, corpus_from_records

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="eval-throughput-") as tmp:
        root = Path(tmp)
        cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
        cfg.work_dir = str(root / "work")
        cfg.data.num_eval = args.items
        cfg.eval.max_new_tokens, cfg.eval.num_render = args.max_new_tokens, 0
        build_dataset(cfg, "eval", root / "data", progress=False)
        model_dir = build_tiny_model(cfg, root / "model", corpus_from_records(load_records(root / "data")))
        gen = ModelGenerator(cfg, model_dir, backend="hf")
        t0 = time.perf_counter()
        gen._load()
        load_s = time.perf_counter() - t0
        print(f"tiny model loaded in {load_s:.1f}s; {args.items} SIF-Bench items, "
              f"{args.max_new_tokens} new tokens each, greedy\n")
        print("| batch size | items | wall s | items/s | speed-up |")
        print("|---|---|---|---|---|")
        base = None
        for bs in (int(b) for b in args.batches.split(",")):
            gen.batch_size = cfg.eval.batch_size = bs
            t0 = time.perf_counter()
            res = run_benchmark(cfg, "sif-bench", root / "data", root / f"out-{bs}", generate_fn=gen, track=False)
            dt = time.perf_counter() - t0
            rate = res.generated / dt
            base = base or rate
            print(f"| {bs} | {res.generated} | {dt:.1f} | {rate:.2f} | {rate / base:.2f}x |", flush=True)
        t0 = time.perf_counter()  # the same run again: every item comes from predictions.jsonl
        res = run_benchmark(cfg, "sif-bench", root / "data", root / f"out-{bs}", generate_fn=gen, track=False)
        dt = time.perf_counter() - t0
        print(f"| {bs}, rerun (all {res.cached} cached) | 0 generated | {dt:.1f} | {res.cached / dt:.1f} | - |")


if __name__ == "__main__":
    main()
