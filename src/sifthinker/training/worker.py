"""The per-rank entry point of a distributed launch (``python -m sifthinker.training.worker STAGE ...``).

Kept apart from :mod:`sifthinker.training.launch` so that the launcher never imports the stages that
call it. Rank 0 writes the ``TrainResult`` as JSON to ``--result`` for the launching process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from sifthinker.config.run_config import RunConfig
from sifthinker.training.grpo import GRPO
from sifthinker.training.ranks import is_main_process
from sifthinker.training.runner import run_in_process
from sifthinker.training.sft import SFT

TRAINING_STAGES = {s.name.value: s for s in (SFT, GRPO)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sifthinker.training.worker")
    p.add_argument("stage", choices=sorted(TRAINING_STAGES))
    p.add_argument("--recipe", required=True)
    p.add_argument("--train-dir", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--max-steps", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING)
    cfg = RunConfig.load(a.recipe)
    res = run_in_process(TRAINING_STAGES[a.stage], cfg, Path(a.train_dir), a.model, Path(a.out),
                         max_steps=a.max_steps)
    if is_main_process():
        out = dataclasses.asdict(res)
        out["output_dir"] = str(res.output_dir)
        Path(a.result).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
