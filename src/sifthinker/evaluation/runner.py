"""The evaluate stage: generate a trace for every eval record, score, render, report, log to MLflow.

``evaluate(cfg, model_dir, eval_dir, out_dir)`` writes into ``out_dir``:

* ``predictions.jsonl``: one line per record (id, category, question, GT answer, prediction, item scores);
* ``metrics.json``: the flat metrics of :mod:`sifthinker.evaluation.metrics` (what the gate reads);
* ``renders/*.png``: ``cfg.eval.num_render`` traces drawn on their images (GT boxes in magenta),
  picked round-robin over categories so each category is shown;
* ``accuracy_by_category.png`` and ``report.html``.

Generation is behind a seam: ``generate_fn(records, root) -> list[str]``, one text per record, where
``root`` is the dataset folder the record paths are relative to. The default is :class:`ModelGenerator`
(``sifthinker.model.load_model`` + ``sifthinker.model.inference.generate``, greedy). Tests pass
:class:`FakeOracleGenerator`, a fake that replays each record's own assistant trace (optionally corrupted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from sifthinker import events
from sifthinker.config import RunConfig
from sifthinker.data.build import load_records
from sifthinker.evaluation.metrics import EvalScores, gt_boxes, score_predictions
from sifthinker.evaluation.report import category_accuracy_chart, write_html_report
from sifthinker.names import Stage
from sifthinker.visualize import save_trace_png

__all__ = ["EvalResult", "FakeOracleGenerator", "GenerateFn", "ModelGenerator", "evaluate", "load_records"]

log = logging.getLogger(__name__)

GenerateFn = Callable[[list[dict], Path], list[str]]
STAGE = Stage.EVALUATE


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions_path: Path
    renders: list[Path]
    report_html: Path
    metrics_path: Path | None = None
    chart: Path | None = None
    run_id: str | None = None  # the MLflow run, when tracked
    scores: EvalScores | None = field(default=None, repr=False)

    def headline(self) -> str:
        """The key numbers in one line: validity, accuracy, grounding, depth consistency, items."""
        m = self.metrics
        shown = [("validity", "format_validity"), ("accuracy", "accuracy"), ("grounding Acc@0.5", "grounding_acc50"),
                 ("depth", "depth_consistency")]
        parts = [f"{label} {m[key]:.3f}" for label, key in shown if key in m]
        return ", ".join(parts) + f" ({int(m.get('n', 0))} items)"


def record_images(record: dict, root: Path) -> tuple[Image.Image, Image.Image | None]:
    """The RGB and colour-depth images of a record (``images`` = [rgb, depth], paths relative to root)."""
    paths = list(record.get("images") or [])
    rgb = paths[0] if paths else record["image"]
    depth = paths[1] if len(paths) > 1 else record.get("depth_image")
    with Image.open(root / rgb) as im:
        image = im.convert("RGB")
    depth_img = None
    if depth:
        with Image.open(root / depth) as im:
            depth_img = im.convert("RGB")
    return image, depth_img


class ModelGenerator:
    """The real generator: loads ``model_dir`` once and decodes greedily (``cfg.eval.max_new_tokens``)."""

    name = "model"

    def __init__(self, cfg: RunConfig, model_dir: str | Path):
        self.cfg = cfg
        self.model_dir = Path(model_dir)
        self._loaded: tuple[Any, Any] | None = None

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from sifthinker.model import load_model

            t0 = time.monotonic()
            self._loaded = load_model(self.model_dir, self.cfg)
            log.info("loaded model from %s in %.1fs", self.model_dir, time.monotonic() - t0)
        return self._loaded

    def __call__(self, records: list[dict], root: Path) -> list[str]:
        from sifthinker.model.inference import GenRequest, generate

        model, processor = self._model()
        requests = []
        for rec in records:
            image, depth_img = record_images(rec, root)
            if depth_img is None:  # spec P1: the model sees RGB + depth everywhere, never RGB alone
                raise ValueError(f"record {rec.get('id')!r} has no depth image")
            requests.append(GenRequest(image=image, depth_image=depth_img, question=rec["problem"]))
        return generate(
            model, processor, requests,
            max_new_tokens=self.cfg.eval.max_new_tokens, temperature=0.0, batch_size=self.cfg.eval.batch_size,
        )


def _assistant_text(record: dict) -> str:
    for m in reversed(record.get("messages") or []):
        if m.get("role") in ("assistant", "gpt"):
            c = m.get("content")
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


class FakeOracleGenerator:
    """FAKE generator for tests and smoke runs: replays each record's own assistant trace.

    It never looks at a model, so its metrics say nothing about a model; it checks the stage's plumbing.
    ``corrupt`` damages every ``every``-th item (by position in the eval set) in one of these ways:
    ``"no_answer"`` (drops the <answer> block), ``"bad_format"`` (drops ``</think>``),
    ``"wrong_answer"`` (answer replaced by ``"no idea"``), ``"miss_boxes"`` (last area moved off the GT
    to the opposite image corner, stated depths kept).
    """

    name = "fake-oracle"
    MODES = ("no_answer", "bad_format", "wrong_answer", "miss_boxes")

    def __init__(self, corrupt: str | None = None, every: int = 1):
        if corrupt is not None and corrupt not in self.MODES:
            raise ValueError(f"corrupt must be one of {self.MODES} or None, got {corrupt!r}")
        if every < 1:
            raise ValueError("every must be >= 1")
        self.corrupt, self.every, self._seen = corrupt, every, 0

    def _damage(self, text: str) -> str:
        if self.corrupt == "no_answer":
            return re.sub(r"\s*<answer>.*?</answer>", "", text, flags=re.DOTALL)
        if self.corrupt == "bad_format":
            return text.replace("</think>", "", 1)
        if self.corrupt == "wrong_answer":
            return re.sub(r"<answer>.*?</answer>", "<answer>no idea</answer>", text, flags=re.DOTALL)
        # miss_boxes: replace the last area by a small box in the corner farthest from the GT boxes
        starts = [m.start() for m in re.finditer(r"<area>", text)]
        if not starts:
            return text
        end = text.index("</area>", starts[-1])
        last = text[starts[-1] + len("<area>") : end]
        try:
            items = json.loads(last)
            depth = items[0]["depth"]
            cx = (items[0]["bbox_2d"][0] + items[0]["bbox_2d"][2]) / 2
            cy = (items[0]["bbox_2d"][1] + items[0]["bbox_2d"][3]) / 2
        except (ValueError, KeyError, IndexError, TypeError):
            return text
        x1 = 0.0 if cx > 0.5 else 0.9
        y1 = 0.0 if cy > 0.5 else 0.9
        box = f'[{{"bbox_2d":[{x1},{y1},{x1 + 0.1:.1f},{y1 + 0.1:.1f}],"depth":{depth}}}]'
        return text[: starts[-1] + len("<area>")] + box + text[end:]

    def __call__(self, records: list[dict], root: Path) -> list[str]:
        out = []
        for rec in records:
            text = _assistant_text(rec)
            if self.corrupt and self._seen % self.every == 0:
                text = self._damage(text)
            self._seen += 1
            out.append(text)
        return out


def _generate_all(gen: GenerateFn, records: list[dict], root: Path, batch_size: int) -> list[str]:
    n, preds = len(records), []
    n_batches = max(1, -(-n // batch_size))
    log_every = max(1, n_batches // 10)
    t0 = time.monotonic()
    with tqdm(total=n, desc=STAGE, unit="item", disable=None) as bar:
        for b, start in enumerate(range(0, n, batch_size)):
            batch = records[start : start + batch_size]
            outs = list(gen(batch, root))
            if len(outs) != len(batch):
                raise RuntimeError(f"generator returned {len(outs)} texts for a batch of {len(batch)}")
            preds.extend(o if isinstance(o, str) else "" for o in outs)
            bar.update(len(batch))
            events.progress(STAGE, len(preds), n, note=f"{len(preds) / max(time.monotonic() - t0, 1e-9):.2f} items/s")
            if (b + 1) % log_every == 0 or b + 1 == n_batches:
                dt = time.monotonic() - t0
                log.info("generated %d/%d (%.1f items/s)", len(preds), n, len(preds) / max(dt, 1e-9))
    return preds


def _render_order(records: Sequence[dict], k: int) -> list[int]:
    """Indices of up to ``k`` records, round-robin over categories in first-seen order."""
    by_cat: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_cat.setdefault(str(r.get("category") or "unknown"), []).append(i)
    queues, picked = list(by_cat.values()), []
    while len(picked) < k and any(queues):
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop(0))
    return picked


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "item"


def _mlflow_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def evaluate(
    cfg: RunConfig,
    model_dir: str | Path | None,
    eval_dir: str | Path,
    out_dir: str | Path,
    *,
    generate_fn: GenerateFn | None = None,
    track: bool = True,
    limit: int | None = None,
) -> EvalResult:
    """Run the evaluate stage (module docstring); ``track=False`` skips MLflow (files are still written)."""
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = load_records(eval_dir)[:limit] if limit else load_records(eval_dir)
    if not records:
        raise ValueError(f"{eval_dir}/records.json has no records")
    if generate_fn is None:
        if model_dir is None:
            raise ValueError("model_dir is required unless generate_fn is given")
        generate_fn = ModelGenerator(cfg, model_dir)
    gen_name = getattr(generate_fn, "name", type(generate_fn).__name__)
    params = {
        "model_dir": str(model_dir), "eval_dir": str(eval_dir), "n": len(records), "generator": gen_name,
        "max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size,
    }
    if track:
        from sifthinker.tracking import stage_run

        ctx: contextlib.AbstractContextManager[Any] = stage_run(cfg, STAGE, params=params)
    else:
        ctx = contextlib.nullcontext(None)
    for stale in (out_dir / "renders").glob("*.png"):  # renders of an earlier run in the same folder
        stale.unlink()
    with ctx as run:
        log.info("evaluating %d records from %s with %s", len(records), eval_dir, gen_name)
        preds = _generate_all(generate_fn, records, eval_dir, max(1, cfg.eval.batch_size))
        scores = score_predictions(records, preds, eval_dir)
        metrics = scores.metrics

        pred_path = out_dir / "predictions.jsonl"
        with pred_path.open("w", encoding="utf-8") as f:
            for rec, pred, item in zip(records, preds, scores.items, strict=True):
                row = {"problem": rec.get("problem"), "response": rec.get("response"), "prediction": pred}
                f.write(json.dumps({**item.to_dict(), **row}, ensure_ascii=False) + "\n")
        metrics_path = out_dir / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True))

        renders: list[Path] = []
        for i in _render_order(records, max(0, cfg.eval.num_render)):
            rec, item = records[i], scores.items[i]
            image, depth_img = record_images(rec, eval_dir)
            title = (f"{item.id} [{item.category}] Q: {rec.get('problem', '')} | GT: {rec.get('response', '')}"
                     f" | {'correct' if item.correct else 'wrong'}")
            renders.append(save_trace_png(image, preds[i], out_dir / "renders" / f"{i:04d}_{_safe(item.id)}.png",
                                          title, depth_image=depth_img, gt_boxes=gt_boxes(rec)))
        chart = category_accuracy_chart(metrics, out_dir / "accuracy_by_category.png", title=f"{cfg.name}: accuracy")
        context = {"recipe": cfg.name, "model": str(model_dir), "eval data": str(eval_dir), "generator": gen_name}
        html = write_html_report(out_dir / "report.html", metrics, scores.items, preds, chart=chart,
                                 renders=renders, context=context, title=f"SIFThinker evaluation: {cfg.name}")
        log.info("metrics: %s", ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items())))

        if run is not None:
            import mlflow

            mlflow.log_metrics({_mlflow_key(k): float(v) for k, v in metrics.items()})
            for p in (metrics_path, pred_path, chart, html):
                mlflow.log_artifact(str(p))
            if renders:
                mlflow.log_artifacts(str(out_dir / "renders"), artifact_path="renders")
    return EvalResult(metrics=metrics, predictions_path=pred_path, renders=renders, report_html=html,
                      metrics_path=metrics_path, chart=chart, run_id=getattr(getattr(run, "info", None), "run_id", None),
                      scores=scores)

