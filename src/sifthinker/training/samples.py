"""Sample completions in MLflow every N GRPO steps: a table, and each trace drawn on its image.

TRL keeps the last generation batch's prompts, completions, per-reward scores and advantages
(gathered from every rank) in ``trainer._logs``; :func:`with_sample_columns` adds the row's image path,
id and GT boxes to it (through the ``log_extra`` hook TRL gives reward functions), so a sample can be
drawn on its own image with :func:`sifthinker.method.visualize.draw_trace`. Artifacts:
``samples/step_<N>.json`` (an MLflow table) and ``samples/step_<N>/<i>.png``. While the tracking server is
away, sample steps are kept on disk and sent once it is back (:class:`SampleTableCallback`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sifthinker.method.prompts import INSTRUCTION
from sifthinker.rewards.inputs import completion_text, content_text

log = logging.getLogger(__name__)

_COLUMNS = ("image", "id", "gt_boxes")


def with_sample_columns(func: Callable[..., list[float]]) -> Callable[..., list[float]]:
    """``func`` that also hands TRL the row's image, id and GT boxes for the sample tables."""

    @functools.wraps(func)  # keeps __name__: TRL logs the reward under it
    def wrapped(completions: Any, **kwargs: Any) -> list[float]:
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:
            for col in _COLUMNS:
                if kwargs.get(col) is not None:
                    log_extra(col, [v if isinstance(v, str) else json.dumps(v, default=list) for v in kwargs[col]])
        return func(completions, **kwargs)

    return wrapped


def _question(prompt: Any) -> str:
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"] if isinstance(prompt, list) else []
    text = content_text(users[-1].get("content")) if users else str(prompt)
    return text.replace(INSTRUCTION, "").strip()


def sample_rows(logs: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The first ``n`` completions of TRL's last logged generation batch, one dict per row."""
    completions = list(logs.get("completion", []))
    prompts, advantages = list(logs.get("prompt", [])), list(logs.get("advantages", []))
    rewards = {k: list(v) for k, v in logs.get("rewards", {}).items()}
    extra = {k: list(v) for k, v in logs.get("extra", {}).items()}
    rows = []
    for i in range(min(n, len(completions))):
        row = {"question": _question(prompts[i]) if i < len(prompts) else "",
               "completion": completion_text(completions[i])}
        row |= {name: values[i] for name, values in rewards.items() if i < len(values)}
        row |= {col: extra[col][i] for col in _COLUMNS if col in extra and i < len(extra[col])}
        if i < len(advantages):
            row["advantage"] = advantages[i]
        rows.append(row)
    return rows


def _draw(row: dict[str, Any], path: Path) -> str | None:
    from PIL import Image

    from sifthinker.method.visualize import save_trace_png

    if not row.get("image"):
        return None
    try:
        gt = json.loads(row["gt_boxes"]) if row.get("gt_boxes") else None
        with Image.open(row["image"]) as img:
            save_trace_png(img, row["completion"], path, title=row["question"][:200], gt_boxes=gt)
    except Exception as exc:  # a sample that cannot be drawn must not stop training
        log.warning("could not draw a sample trace: %s", exc)
        return None
    return path.name


PENDING = "pending-samples"  # under the trainer's output folder: sample steps MLflow has not taken yet


def send_pending(root: Path) -> int:
    """Upload every kept sample step under ``root`` (oldest first) to the active MLflow run, removing each
    once MLflow has taken it; stops at the first failure (the server is still away) and re-raises it.
    Returns the number of steps sent."""
    import shutil

    import mlflow

    sent = 0
    for folder in sorted(p for p in root.glob("step_*") if (p / "table.json").is_file()):
        if (folder / "pngs").is_dir() and any((folder / "pngs").iterdir()):
            mlflow.log_artifacts(str(folder / "pngs"), artifact_path=f"samples/{folder.name}")
        mlflow.log_table(data=json.loads((folder / "table.json").read_text()), artifact_file=f"samples/{folder.name}.json")
        shutil.rmtree(folder)
        sent += 1
    return sent


class SampleTableCallback(TrainerCallback):
    """Every ``every`` steps (rank 0), log ``num`` sample completions to the active MLflow run.

    Each sample step is written under ``<output_dir>/pending-samples/step_<N>/`` first and sent from there:
    while the tracking server is away the steps stay on disk (one warning) and go, oldest first, with the
    next sample step or at the end of training once it answers again (or with the rerun's run, when the
    outage outlasts ``registry.tracking_outage_s`` and the step is retried)."""

    def __init__(self, every: int, num: int) -> None:
        self.every, self.num = every, num
        self.trainer: Any = None  # set once the trainer exists; its _logs hold the samples
        self.failing = False

    def _send(self, root: Path) -> None:
        try:
            sent = send_pending(root)
        except Exception as exc:  # a tracking hiccup must not kill a training run: the steps stay on disk
            if not self.failing:
                kept = len(list(root.glob("step_*")))
                log.warning("could not log sample completions to MLflow (%s); %d sample step(s) kept in %s, "
                            "sent once the server answers", exc, kept, root)
            self.failing = True
            return
        if self.failing and sent:
            log.warning("MLflow took the %d kept sample step(s) again", sent)
        self.failing = False

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
        if (not self.every or self.trainer is None or not state.is_world_process_zero or not state.global_step
                or state.global_step % self.every or "train_runtime" in (logs or {})):
            return
        import mlflow

        if mlflow.active_run() is None:
            return
        rows = sample_rows(getattr(self.trainer, "_logs", {}), self.num)
        if not rows:
            return
        root = Path(args.output_dir) / PENDING
        step = f"step_{state.global_step:05d}"
        folder = root / step
        (folder / "pngs").mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(rows):
            row["trace_png"] = _draw(row, folder / "pngs" / f"{i}.png")
            row["trace_png"] = f"samples/{step}/{row['trace_png']}" if row["trace_png"] else ""
        columns = {k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}
        tmp = folder / "table.json.tmp"
        tmp.write_text(json.dumps(columns, default=str))
        tmp.replace(folder / "table.json")  # a step is complete (sendable) only once its table is there
        self._send(root)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        import mlflow

        root = Path(args.output_dir) / PENDING
        if state.is_world_process_zero and mlflow.active_run() is not None and root.is_dir():
            self._send(root)
