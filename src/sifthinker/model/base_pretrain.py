"""The long pre-training of the shipped tiny base (``sifthinker model pretrain-base``).

Qwen2.5-VL-7B arrives able to see and point; the tiny model is built from random weights, and SFT alone
never teaches it to read a box off the image or a colour off an object (issue 9, docs/benchmarks.md).
This pays that cost once, for hours, on fresh synthetic scenes, and the result is committed like a hub
checkpoint (``models/sif-tiny-base``, :mod:`sifthinker.model.base_card`).

A fresh run builds the tiny model as the builder does (tokenizer trained on SIF training records and the
pre-training's own texts, random weights, copy pre-training), then trains every step on a batch that mixes
"Where is the <colour> <shape>?" with SIF areas (:mod:`.ground_pretrain`) and short-answer questions
(:mod:`.short_answer`), adding the copy task's loss every ``copy_every`` steps. Items are a function of
(stretch seed, step), so a resumed run sees exactly the scenes it would have seen. Every
``checkpoint_minutes`` the model (a ``save_pretrained`` folder), optimizer, schedule, step, random state
and the history of stretches go to ``<out>/checkpoint`` (written aside, then renamed in); a rerun with
the same ``--out`` resumes there. ``--init-from`` starts a new stretch (step 0, its own schedule) from a
committed base and carries its card's history forward. A held-out probe (:mod:`.base_probe`) is logged
to MLflow and printed every ``probe_every`` steps.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sifthinker.config.run_config import RunConfig

log = logging.getLogger(__name__)

TRAIN_SEED = 20_000_000  # first item seed of stretch seed 0; far from the probe's (base_probe.PROBE_SEED)
STRETCH_SPAN = 5_000_000  # item seeds per stretch seed
CHECKPOINT = "checkpoint"
STATE_FILE = "trainer_state.pt"
CARD_JSON = "base_card.json"  # a committed base's history, read by --init-from
TOKENIZER_TEXTS = 300  # pre-training items of each task whose texts join the tokenizer corpus


def source_commit() -> str:
    """The git commit of the code that runs (with ``-dirty`` for uncommitted changes); 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def item_seeds(cfg: RunConfig, step: int) -> range:
    """The item seeds of ``step`` (1-based) of the stretch with ``cfg.pretrain.seed``."""
    p = cfg.pretrain
    first = TRAIN_SEED + p.seed * STRETCH_SPAN + (step - 1) * p.batch_size
    return range(first, first + p.batch_size)


def check_seed_range(cfg: RunConfig) -> None:
    """The stretch's item seeds must stay in its own span and below the probe's."""
    from sifthinker.model.base_probe import PROBE_SEED

    p = cfg.pretrain
    if p.steps * p.batch_size > STRETCH_SPAN:
        raise ValueError(f"pretrain.steps x batch_size = {p.steps * p.batch_size} items exceed a stretch's "
                         f"{STRETCH_SPAN} seeds")
    if item_seeds(cfg, p.steps)[-1] >= PROBE_SEED:
        raise ValueError(f"pretrain.seed {p.seed} reaches the held-out probe's scene seeds; use a smaller one")


def step_items(cfg: RunConfig, step: int) -> list[tuple[str, str, list[Any]]]:
    """The (question, target, images) items of ``step``: each is a grounding item with probability
    ``ground_fraction`` (drawn from its seed), else a short-answer item."""
    from sifthinker.model.ground_pretrain import grounding_item
    from sifthinker.model.short_answer import short_item

    w, h, frac = cfg.data.width, cfg.data.height, cfg.pretrain.ground_fraction
    return [grounding_item(s, w, h) if random.Random(s).random() < frac else short_item(s, w, h)[:3]
            for s in item_seeds(cfg, step)]


# ---- the starting model ------------------------------------------------------------------------------
def ensure_corpus(cfg: RunConfig, out: Path) -> list[str]:
    """The tokenizer and copy-task corpus, cached in ``<out>/corpus.json``: the prompts and traces of
    ``corpus_records`` SIF training records (the recipe's data section) and the texts of the first
    pre-training items."""
    from sifthinker.data.build import build_dataset, load_records
    from sifthinker.model.tiny import corpus_from_records

    path = out / "corpus.json"
    if path.is_file():
        return json.loads(path.read_text())
    data_cfg = copy.deepcopy(cfg)
    data_cfg.data.num_train = cfg.pretrain.corpus_records
    data_dir = out / "corpus-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    log.info("building %d SIF training records for the tokenizer corpus", cfg.pretrain.corpus_records)
    build_dataset(data_cfg, "train", data_dir, progress=False)
    texts = list(corpus_from_records(load_records(data_dir)))
    shutil.rmtree(data_dir, ignore_errors=True)
    for step in range(1, TOKENIZER_TEXTS // cfg.pretrain.batch_size + 2):
        texts += [f"{q} {a}" for q, a, _ in step_items(cfg, step)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(texts))
    tmp.replace(path)
    return texts


def ensure_init(cfg: RunConfig, out: Path, corpus: list[str]) -> Path:
    """``<out>/init``: the tiny builder's model (trained tokenizer, seeded random weights, then
    ``copy_init_steps`` of copy pre-training), built once (aside, then renamed in)."""
    from sifthinker.model.tiny import build_tiny_model

    target = out / "init"
    if (target / "config.json").is_file():
        return target
    build_cfg = copy.deepcopy(cfg)
    build_cfg.model.tiny.pretrain_steps = cfg.pretrain.copy_init_steps
    build_cfg.model.tiny.ground_steps = 0
    tmp = out / "init.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(build_cfg, tmp, corpus)
    tmp.replace(target)
    return target


# ---- checkpoints ---------------------------------------------------------------------------------------
def latest_checkpoint(out: Path) -> Path | None:
    """The run's checkpoint folder (the previous one if a crash fell between the two renames), or None."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        if (out / name / STATE_FILE).is_file():
            return out / name
    return None


def save_checkpoint(out: Path, model: Any, processor: Any, state: dict[str, Any]) -> Path:
    """Write model, processor and ``state`` to ``<out>/checkpoint.tmp``, then swap it in for the old one."""
    import torch

    tmp, final, old = out / (CHECKPOINT + ".tmp"), out / CHECKPOINT, out / (CHECKPOINT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_card_history(folder: Path) -> list[dict[str, Any]]:
    """The stretches recorded in a committed base's card (empty if it has none)."""
    path = Path(folder) / CARD_JSON
    return json.loads(path.read_text()).get("history", []) if path.is_file() else []


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the run ---------------------------------------------------------------------------------------------
def pretrain_base(cfg: RunConfig, out: Path, init_from: Path | None = None, recipe: str = "",
                  stop_after: int | None = None) -> dict[str, Any]:
    """Pre-train (or resume pre-training) the tiny base into ``out``; returns the final state's summary
    (step, history, last probe). ``stop_after``: return after this many steps of this call (a checkpoint
    is written first), e.g. to run a stretch in pieces."""
    import mlflow
    import torch

    from sifthinker.model.base_probe import format_probe, probe_items, run_probe
    from sifthinker.model.ground_pretrain import vlm_batch
    from sifthinker.model.image_use import image_use_metrics
    from sifthinker.model.loading import check_model_folder, load_model
    from sifthinker.model.pretrain import copy_batch, copy_corpus, make_optimizer, optimizer_step
    from sifthinker.registry import tracking

    p = cfg.pretrain
    check_seed_range(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.model.freeze_vision = False  # the tower learns to see here, as in a VLM's pre-training
    if not cfg.registry.tracking_uri:
        cfg.registry.tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
        cfg.registry.artifact_root = str(out / "mlartifacts")
    corpus = ensure_corpus(cfg, out)
    ckpt = latest_checkpoint(out)
    state: dict[str, Any]
    if ckpt is not None:
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        src = ckpt
        if init_from is not None:
            log.info("resuming %s at step %d; --init-from %s applies to a new run only", ckpt,
                     state["step"], init_from)
        # The card shows where a stretch was picked up again, and with which code.
        state["history"][-1].setdefault("resumed", []).append(
            {"step": state["step"], "commit": source_commit(), "at": _now()})
    else:
        if init_from is not None:
            src = check_model_folder(init_from)
            history, start = read_card_history(src), f"init-from {init_from}"
        else:
            src, history, start = ensure_init(cfg, out, corpus), [], "fresh (random weights + copy pre-training)"
        if any(s.get("seed") == p.seed for s in history):
            log.warning("pretrain.seed %d was used by an earlier stretch: this one repeats its scenes", p.seed)
        history.append({"stretch": len(history) + 1, "start": start, "seed": p.seed, "steps": 0,
                        "planned_steps": p.steps, "batch_size": p.batch_size,
                        "ground_fraction": p.ground_fraction, "copy_every": p.copy_every,
                        "learning_rate": p.learning_rate, "vision_lr_scale": p.vision_lr_scale, "recipe": recipe, "commit": source_commit(),
                        "started": _now(), "updated": _now(),
                        "data": f"synthetic scenes {cfg.data.width}x{cfg.data.height}, item seeds "
                                f"{item_seeds(cfg, 1)[0]}.. (grounding: 1 / 2-3 / 3-8 objects; short "
                                "answers: the builder's 3-8)"})
        state = {"step": 0, "history": history, "probe": {}, "run_id": None}
    model, processor = load_model(src, cfg, for_training=True)
    optim = make_optimizer(model, p.learning_rate, p.warmup, p.steps, p.vision_lr_scale)
    if "optimizer" in state:
        if len(state["optimizer"]["param_groups"]) != len(optim[0].param_groups):
            raise ValueError(f"the checkpoint in {out} was trained with another pretrain.vision_lr_scale (its "
                             "optimizer has other parameter groups): resume with the setting it started with, "
                             "or start a new stretch with --init-from")
        optim[0].load_state_dict(state["optimizer"])
        optim[1].load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
    elif state["step"] == 0:
        torch.manual_seed(p.seed)
    step_fn = optimizer_step(model, p.learning_rate, p.warmup, p.steps, optim)
    texts, words = copy_corpus(corpus)
    held_out = probe_items(p.probe_items, cfg.data.width, cfg.data.height)
    # Whether the loss depends on the images at all, and the tower's output norm (docs/benchmarks.md:
    # the first base learnt the format while ignoring its images).
    gap_items = held_out["ground/1"][:8]

    tracking.configure(cfg)
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    run = mlflow.start_run(run_id=state["run_id"]) if state["run_id"] else mlflow.start_run(
        experiment_id=exp.experiment_id, run_name=f"{cfg.name}-pretrain-base-{len(state['history'])}",
        tags={tracking.STAGE_TAG: "pretrain-base", "sifthinker.recipe": cfg.name})
    if not state["run_id"]:
        mlflow.log_params({f"pretrain.{k}": v for k, v in vars(p).items()}
                          | {f"tiny.{k}": v for k, v in vars(cfg.model.tiny).items()}
                          | {"init": state["history"][-1]["start"][:250], "commit": state["history"][-1]["commit"]})
    state["run_id"] = run.info.run_id

    def checkpoint() -> None:
        state["history"][-1].update(steps=state["step"], updated=_now(), probe=state["probe"])
        save_checkpoint(out, model, processor, state | {
            "optimizer": optim[0].state_dict(), "scheduler": optim[1].state_dict(),
            "torch_rng": torch.get_rng_state()})
        log.info("checkpoint at step %d in %s", state["step"], out / CHECKPOINT)

    first = state["step"] + 1
    last = p.steps if stop_after is None else min(p.steps, state["step"] + stop_after)
    log.info("pre-training steps %d..%d of %d into %s", first, last, p.steps, out)
    model.train()
    t0 = t_ckpt = time.monotonic()
    losses: list[float] = []
    try:
        for step in range(first, last + 1):
            outputs = model(**vlm_batch(processor, step_items(cfg, step)))
            loss = outputs.loss
            if p.copy_every and step % p.copy_every == 0:
                rng = random.Random(TRAIN_SEED + p.seed * STRETCH_SPAN + step)
                loss = loss + model(**copy_batch(processor.tokenizer, texts, words, rng)).loss
            losses.append(outputs.loss.item())
            step_fn(loss)
            state["step"] = step
            if step % p.log_every == 0 or step == last:
                mean = sum(losses) / len(losses)
                losses.clear()
                rate = (time.monotonic() - t0) / (step - first + 1)
                log.info("step %d/%d: loss %.3f, lr %.2e, %.2f s/step", step, p.steps, mean,
                         optim[1].get_last_lr()[0], rate)
                mlflow.log_metrics({"loss": mean, "lr": optim[1].get_last_lr()[0], "s_per_step": rate}, step=step)
            if step % p.probe_every == 0 or step == p.steps:
                state["probe"] = {"step": step, **run_probe(model, processor, held_out)}
                if len(gap_items) >= 2:
                    state["probe"] |= image_use_metrics(model, processor, gap_items)
                mlflow.log_metrics({k: v for k, v in state["probe"].items() if k != "step"}, step=step)
                log.info(format_probe(step, state["probe"]))
            if time.monotonic() - t_ckpt >= p.checkpoint_minutes * 60 or step == last:
                checkpoint()
                t_ckpt = time.monotonic()
    finally:
        mlflow.end_run()
    model.eval()
    return {"step": state["step"], "history": state["history"], "probe": state["probe"]}
