"""What GRPO-SIF adds over SFT alone: both evaluated on the held-out synthetic split, over several seeds.

Usage: PYTHONPATH=src python benchmarks/grpo_ablation.py [--recipe recipes/local.yaml] [--seeds 0 1 2]
       [--work /tmp/grpo-ablation] [--eval-items N]

Per seed: SFT from the (cached) base model, then GRPO-SIF from that same SFT checkpoint; both models are
evaluated greedily on the same held-out items. The data (train and eval) is built once and shared by
every seed; the seed only changes training (initial shuffle, sampling). Prints per seed and mean +- std
over seeds: answer accuracy, grounding Acc@0.5, mean r_box on items with ground-truth boxes, depth
consistency, format validity. Runs the library's own stages (run_sft, run_grpo, generate,
score_predictions, rewards.box_reward), i.e. the exact code path of the pipeline.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per run
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402

from sifthinker.config.run_config import RunConfig  # noqa: E402
from sifthinker.data.build import SyntheticSource, build_records  # noqa: E402
from sifthinker.evaluation.metrics import score_predictions  # noqa: E402
from sifthinker.model import GenRequest, ensure_base_model, generate, load_model  # noqa: E402
from sifthinker.rewards.reward_funcs import box_reward  # noqa: E402
from sifthinker.scenes.model import COLORS, SHAPES  # noqa: E402
from sifthinker.training.grpo import run_grpo  # noqa: E402
from sifthinker.training.sft import run_sft  # noqa: E402

EVAL_SEED = 100_000  # far from the train seed, as in the pipeline's held-out split
COLUMNS = ("accuracy", "grounding_acc50", "mean_box_reward", "depth_consistency", "format_validity", "copy_rate")
# An object name of the synthetic scenes ("yellow pyramid"): the copy rate is the share of held-out items
# whose first <text> names every object of the question (docs/benchmarks.md: a random tiny LM copies none).
NAME = re.compile(r"\b(" + "|".join(COLORS) + r") (" + "|".join(SHAPES) + r")\b")


def copy_rate(records: list[dict], preds: list[str]) -> float:
    hits = []
    for r, p in zip(records, preds, strict=True):
        asked = set(NAME.findall(r["problem"]))
        if asked:
            first = re.search(r"<text>(.*?)</text>", p or "", re.S)
            hits.append(bool(first) and asked <= set(NAME.findall(first.group(1))))
    return sum(hits) / max(1, len(hits))


def evaluate(cfg: RunConfig, model_dir: Path, eval_dir: Path, records: list[dict]) -> dict[str, float]:
    model, processor = load_model(model_dir, cfg)
    reqs = [GenRequest(Image.open(eval_dir / r["image"]), Image.open(eval_dir / r["depth_image"]), r["problem"])
            for r in records]
    preds = generate(model, processor, reqs, cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    m = score_predictions(records, preds, eval_dir).metrics
    with_boxes = [(p, r) for p, r in zip(preds, records, strict=True) if r.get("normalized_solution_round", {}).get("bbox_3d")]
    boxes = box_reward([p for p, _ in with_boxes],
                       normalized_solution_round=[r["normalized_solution_round"] for _, r in with_boxes])
    return {"accuracy": m["accuracy"], "grounding_acc50": m["grounding_acc50"],
            "mean_box_reward": sum(boxes) / max(1, len(boxes)), "depth_consistency": m["depth_consistency"],
            "format_validity": m["format_validity"], "copy_rate": copy_rate(records, preds)}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} +- {statistics.pstdev(values):.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/local.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="/tmp/grpo-ablation")
    ap.add_argument("--eval-items", type=int, default=None, help="held-out items (default: the recipe's num_eval)")
    a = ap.parse_args(argv)

    work = Path(a.work)
    os.environ["SIFTHINKER_WORK_DIR"] = str(work)  # MLflow runs and the cached base model go here
    cfg = RunConfig.load(a.recipe)
    d = cfg.data
    train_dir, eval_dir = work / "data" / "train", work / "data" / "eval"
    for out, n, seed, split in ((train_dir, d.num_train, d.seed, "train"),
                                (eval_dir, a.eval_items or d.num_eval, EVAL_SEED, "test")):
        if not (out / "records.json").is_file():
            build_records(SyntheticSource(d.width, d.height), n, seed, out, split=split, progress=False)
    records = json.loads((eval_dir / "records.json").read_text())
    base = ensure_base_model(cfg, train_dir)

    rows: dict[str, list[dict[str, float]]] = {"sft": [], "sft+grpo": []}
    for seed in a.seeds:
        scfg = replace(cfg, data=replace(d, seed=seed))  # the training seed; the data is already built
        t0 = time.time()
        sft_dir, grpo_dir = work / f"seed{seed}" / "sft", work / f"seed{seed}" / "grpo"
        run_sft(scfg, train_dir, base, sft_dir)
        t1 = time.time()
        run_grpo(scfg, train_dir, sft_dir, grpo_dir)  # from the same SFT checkpoint
        t2 = time.time()
        rows["sft"].append(evaluate(scfg, sft_dir, eval_dir, records))
        rows["sft+grpo"].append(evaluate(scfg, grpo_dir, eval_dir, records))
        print(f"seed {seed}: sft {t1 - t0:.0f} s, grpo {t2 - t1:.0f} s", flush=True)
        for name in rows:
            print(f"  {name:9s}", "  ".join(f"{c}={rows[name][-1][c]:.3f}" for c in COLUMNS), flush=True)

    print(f"\nrecipe {a.recipe}, seeds {a.seeds}, {len(records)} held-out items (mean +- std over seeds)")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, rs in rows.items():
        print(f"| {name} | " + " | ".join(mean_std([r[c] for r in rs]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
