"""Time per GRPO-SIF step on the local recipe's tiny model, split into its parts.

Usage: .venv/bin/python benchmarks/train_step.py [--items 16 --sft-epochs 8 --steps 5] [--zero]
       .venv/bin/python benchmarks/train_step.py --gpu [--model 7b ...]   # GPU tokens/s and MFU: train_step_gpu.py

Builds `data build`'s train split and the local recipe's tiny Qwen2.5-VL, trains it with the recipe's SFT
(so that rollouts are SIF traces the rewards really parse, not noise that fails at the first tag), then
runs the GRPO stage's own trainer (:class:`sifthinker.training.grpo.GRPOStage`: the four rewards, the
progress store, both images in the prompt) for ``--steps`` steps with timers around TRL's parts:

- generation: ``_generate`` (rollouts, tokenising and decoding included);
- reward: ``_calculate_rewards`` (the four SIF rewards, gathering included), and each reward alone;
- reference forward: ``_get_per_token_logps_and_entropies`` without gradient (the reference model's
  log-probabilities for the KL term, and old-policy ones when TRL needs them);
- policy forward: the same with gradient (the loss's forward pass);
- backward: ``accelerator.backward``;
- other: the rest of the step (optimiser step, advantages, logging).

The first step (warm-up) is left out of the means. A tiny model's rollouts are often not valid traces,
which the rewards reject early; so the four rewards are also timed on as many well-formed completions
(the records' reference traces, every reward doing its whole work) as a step scores, and that time is
compared with the measured step. Prints a markdown table for docs/benchmarks.md.

``--zero`` times the same steps again under DeepSpeed ZeRO-3 with the recipes' config
(``images/deepspeed/zero3.json``, adapted to the CPU by the code every run uses) on ``--zero-procs``
processes (default 2) started by torchrun (gloo, ``DS_ACCELERATOR=cpu``, one torch thread each, as the
plain run): the same global batch (the recipe's completions per step, split evenly across the ranks) from
the same SFT model, rank 0's timers. Next to the plain row it shows what ZeRO-3's sharding and the
ranks' collectives cost, and what splitting a step across processes gains, on this machine.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from sifthinker.config.run_config import RunConfig
from sifthinker.data.build import build_dataset, load_records
from sifthinker.model import build_tiny_model, corpus_from_records
from sifthinker.model.loading import load_model
from sifthinker.training.datasets import assistant_trace
from sifthinker.training.grpo import GRPO, progress_exchange, reward_setup
from sifthinker.training.sft import run_sft

REPO = Path(__file__).resolve().parents[1]
PARTS = ("generation", "reward", "reference forward", "policy forward", "backward", "other")


class StepTimer(TrainerCallback):
    """Seconds per part and per step; the parts' timers add into ``current`` while a step runs."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.rewards: dict[str, float] = {}
        self._t0 = 0.0

    def timed(self, part: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # keeps a reward function's __name__ (TRL logs under it)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.current[part() if callable(part) else part] += time.perf_counter() - t0

        return wrapped

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        self.current = defaultdict(float)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        total = time.perf_counter() - self._t0
        row = dict(self.current)
        row["other"] = total - sum(v for k, v in row.items() if k in PARTS)
        row["total"] = total
        self.steps.append(row)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        for k in ("rewards/format_reward/mean", "reward", "completions/mean_length"):
            if logs and k in logs:
                self.rewards[k] = logs[k]


def instrument(trainer: Any, timer: StepTimer) -> None:
    """Timers around the trainer's parts (instance attributes shadow the class's methods)."""
    trainer._generate = timer.timed("generation", trainer._generate)
    trainer._calculate_rewards = timer.timed("reward", trainer._calculate_rewards)
    trainer.reward_funcs = [timer.timed(f"  {f.__name__}", f) for f in trainer.reward_funcs]
    trainer._get_per_token_logps_and_entropies = timer.timed(
        lambda: "policy forward" if torch.is_grad_enabled() else "reference forward",
        trainer._get_per_token_logps_and_entropies)
    trainer.accelerator.backward = timer.timed("backward", trainer.accelerator.backward)


def well_formed_reward_seconds(cfg: RunConfig, records: list[dict], dataset: Any, repeats: int = 20) -> float:
    """Seconds the four rewards take on one step's worth of well-formed completions (mean of ``repeats``)."""
    g = cfg.grpo
    prompts = g.per_device_batch_size // g.num_generations
    rows = [dataset[i % len(dataset)] for i in range(prompts) for _ in range(g.num_generations)]
    cols = {k: [r[k] for r in rows] for k in rows[0] if k not in ("prompt", "images")}
    completions = [[{"role": "assistant", "content": assistant_trace(records[i % len(records)])}]
                   for i in range(prompts) for _ in range(g.num_generations)]
    funcs, _ = reward_setup(cfg, exchange=progress_exchange(cfg))
    scores = [f(completions, **cols) for f in funcs]
    assert min(scores[0]) == 1.0, "a reference trace failed the format check"
    t0 = time.perf_counter()
    for _ in range(repeats):
        for f in funcs:
            f(completions, **cols)
    return (time.perf_counter() - t0) / repeats


def timer_dataset(cfg: RunConfig, records: list[dict], root: Path) -> Any:
    return GRPO.dataset(cfg, GRPO.select(cfg, records), root / "data")


def timed_steps(cfg: RunConfig, sft: Path, records: list[dict], data: Path, out: Path, steps: int) -> tuple:
    """The GRPO stage's own trainer from the SFT model, ``steps`` steps with the part timers."""
    model, processor = load_model(sft, cfg, for_training=True)
    dataset = GRPO.dataset(cfg, GRPO.select(cfg, records), data)
    timer = StepTimer()
    trainer, _ = GRPO.trainer(cfg, model, processor, dataset, str(out), [timer], {"max_steps": steps})
    instrument(trainer, timer)
    trainer.train()
    return timer, model


def zero_steps(cfg: RunConfig, sft: Path, data: Path, root: Path, steps: int, nproc: int) -> StepTimer:
    """The timed steps under ZeRO-3 on ``nproc`` torchrun processes (:func:`zero_worker`); rank 0's timer."""
    import json
    import subprocess

    from sifthinker.training.launch import device_env

    g = cfg.grpo
    if g.per_device_batch_size % nproc or (g.per_device_batch_size // nproc * nproc) % g.num_generations:
        raise SystemExit(f"--zero-procs {nproc} does not split {g.per_device_batch_size} completions per step "
                         f"(groups of {g.num_generations}) evenly")
    recipe, result = root / "zero-recipe.yaml", root / "zero-result.json"
    recipe.write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), "--zero-worker", str(result), "--recipe", str(recipe), "--sft", str(sft),
           "--data", str(data), "--out", str(root / "grpo-zero3"), "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           **device_env()}
    subprocess.run(cmd, env=env, check=True)
    got = json.loads(result.read_text())
    timer = StepTimer()
    timer.steps, timer.rewards = got["steps"], got["rewards"]
    return timer


def zero_worker(args: argparse.Namespace) -> None:
    """One rank of the ZeRO-3 launch: the recipe's GRPO steps, its completions per step split across the
    ranks; rank 0 writes its timer to ``args.zero_worker``."""
    import json

    from sifthinker.training.deepspeed_config import init_deepspeed_comm

    cfg = RunConfig.load(args.recipe)
    cfg.grpo.deepspeed = str(REPO / "images" / "deepspeed" / "zero3.json")
    cfg.grpo.per_device_batch_size //= int(os.environ["WORLD_SIZE"])
    init_deepspeed_comm()  # before any model loads (as run_in_process does)
    timer, _ = timed_steps(cfg, args.sft, load_records(args.data), args.data, args.out, args.steps)
    if os.environ.get("RANK", "0") == "0":
        args.zero_worker.write_text(json.dumps({"steps": timer.steps, "rewards": timer.rewards}))


def means(timer: StepTimer) -> dict[str, float]:
    steps = timer.steps[1:] or timer.steps
    return {k: statistics.mean(s.get(k, 0.0) for s in steps) for k in {k for s in steps for k in s}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16, help="GRPO prompts (SFT trains on >= 24 records)")
    ap.add_argument("--sft-epochs", type=float, default=None, help="default: the local recipe's")
    ap.add_argument("--steps", type=int, default=5, help="GRPO steps timed (the first is warm-up)")
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="the tiny base's copy pre-training steps (default: the local recipe's; 0 skips it)")
    ap.add_argument("--zero", action="store_true", help="also time the steps under DeepSpeed ZeRO-3 (CPU)")
    ap.add_argument("--zero-procs", type=int, default=2, help="processes of the ZeRO-3 launch")
    for hidden in ("--zero-worker", "--recipe", "--sft", "--data", "--out"):  # one rank of that launch
        ap.add_argument(hidden, type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.zero_worker:
        return zero_worker(args)
    logging.basicConfig(level=logging.WARNING)
    os.environ.pop("SIFTHINKER_WORK_DIR", None)

    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        root = Path(tmp)
        cfg = RunConfig.load(REPO / "recipes" / "local.yaml")
        cfg.work_dir = str(root / "work")
        cfg.registry.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        cfg.registry.artifact_root = str(root / "mlartifacts")
        cfg.grpo.num_items = args.items
        cfg.data.num_train = max(24, -(-args.items // 6) * 6)  # whole rounds of the 6 categories: balanced
        cfg.grpo.sample_steps, cfg.grpo.save_steps = 0, 0
        if args.sft_epochs is not None:
            cfg.sft.epochs = args.sft_epochs
        if args.pretrain_steps is not None:
            cfg.model.tiny.pretrain_steps = args.pretrain_steps
        build_dataset(cfg, "train", root / "data", progress=False)
        records = load_records(root / "data")
        base = build_tiny_model(cfg, root / "base", corpus_from_records(records))
        t0 = time.perf_counter()
        sft = run_sft(cfg, root / "data", base, root / "sft").output_dir
        sft_s = time.perf_counter() - t0

        timer, model = timed_steps(cfg, sft, records, root / "data", root / "grpo", args.steps)
        zero = zero_steps(cfg, sft, root / "data", root, args.steps, args.zero_procs) if args.zero else None
        gold_s = well_formed_reward_seconds(cfg, GRPO.select(cfg, records), timer_dataset(cfg, records, root))

    g = cfg.grpo
    steps = timer.steps[1:] or timer.steps
    mean = means(timer)
    zmean = means(zero) if zero is not None else None
    total = mean["total"]
    params = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen2.5-VL ({params / 1e6:.2f} M parameters), SFT {sft_s:.0f}s; GRPO: {g.per_device_batch_size}"
          f" completions per step ({g.per_device_batch_size // g.num_generations} prompts x {g.num_generations}),"
          f" max {g.max_completion_length} new tokens, RGB + depth prompt; {len(steps)} steps timed"
          f" (after 1 warm-up); last logged: " + ", ".join(f"{k}={v:.3g}" for k, v in timer.rewards.items()))
    if zmean is None:
        print("\n| part | s per step | share of step |\n|---|---|---|")
    else:
        print(f"\n| part | s per step | share of step | ZeRO-3 ({args.zero_procs} processes): s per step | share |"
              "\n|---|---|---|---|---|")

    def row(label: str, key: str, digits: int = 3, pct: int = 2) -> None:
        cells = f"| {label} | {mean.get(key, 0.0):.{digits}f} | {100 * mean.get(key, 0.0) / total:.{pct}f}% |"
        if zmean is not None:
            cells += f" {zmean.get(key, 0.0):.{digits}f} | {100 * zmean.get(key, 0.0) / zmean['total']:.{pct}f}% |"
        print(cells)

    for part in PARTS:
        row(part, part)
    for name in sorted(k for k in mean if k.startswith("  ")):
        row(f"&nbsp;&nbsp;{name.strip()}", name, 4, 3)
    row("**step**", "total")
    share = mean.get("reward", 0.0) / total
    print(f"\nrewards: {100 * share:.2f}% of a step ({'under' if share < 0.01 else 'NOT under'} 1%)")
    gold = gold_s / total
    print(f"rewards on {g.per_device_batch_size} well-formed completions (reference traces): {1e3 * gold_s:.1f} ms"
          f" = {100 * gold:.2f}% of the mean step ({'under' if gold < 0.01 else 'NOT under'} 1%)")


if __name__ == "__main__":
    if "--gpu" in sys.argv[1:]:  # the 3B/7B-sized GPU measurement lives in its own script (no tiny-model set-up)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import train_step_gpu

        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--gpu"]
        train_step_gpu.main()
    else:
        main()
