"""The learning curve of a tiny-base pre-training run, read back from its MLflow store.

Usage: PYTHONPATH=src python benchmarks/base_curve.py --run /work/cache/i24/tiny-base

Prints, per probe step, the held-out mean IoU / Acc@0.5 of "Where is X?" per scene size and the
short-answer accuracy per kind (sifthinker.model.base_probe), with the training loss nearest that step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sifthinker.model.base_probe import SCENE_GROUPS
from sifthinker.model.short_answer import KINDS


def main() -> None:
    import mlflow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the pretrain-base --out folder")
    args = ap.parse_args()
    client = mlflow.MlflowClient(f"sqlite:///{args.run.resolve() / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    for run in sorted(runs, key=lambda r: r.info.start_time):
        def hist(key: str, rid: str = run.info.run_id) -> dict[int, float]:
            return {m.step: m.value for m in client.get_metric_history(rid, key)}

        loss = hist("loss")
        cols = [(f"ground/{g}/iou", f"IoU {g}") for g in SCENE_GROUPS] + \
               [(f"ground/{g}/acc50", f"Acc {g}") for g in SCENE_GROUPS] + \
               [(f"short/{k}/acc", k) for k in sorted(KINDS)]
        data = {key: hist(key) for key, _ in cols}
        steps = sorted(data[cols[0][0]])
        print(f"run {run.info.run_name} ({run.info.run_id})")
        print("| step | loss | " + " | ".join(name for _, name in cols) + " |")
        print("|---" * (len(cols) + 2) + "|")
        for s in steps:
            near = min(loss, key=lambda k: abs(k - s)) if loss else None
            row = [f"{data[k].get(s, float('nan')):.3f}" for k, _ in cols]
            print(f"| {s} | {loss[near]:.3f} | " if near is not None else f"| {s} | - | ", end="")
            print(" | ".join(row) + " |")


if __name__ == "__main__":
    main()
