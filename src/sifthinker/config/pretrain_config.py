"""The recipe's ``pretrain`` section (``PretrainConfig``): the long pre-training of the shipped tiny base
(``sifthinker model pretrain-base``, :mod:`sifthinker.model.base_pretrain`). Kept apart from config.py only
so that each module stays small; same conventions: every field carries ``help`` and its constraints.
"""

from __future__ import annotations

from dataclasses import dataclass

from sifthinker.config.schema import doc_field as _f


@dataclass
class PretrainConfig:
    """Pre-training of the tiny base on fresh synthetic scenes (only ``pretrain-base`` reads it)."""

    steps: int = _f(30_000, "Total optimizer steps of a stretch; the learning rate decays linearly to 5% over "
                            "them. A killed run resumes at its checkpoint's step; --init-from starts a new "
                            "stretch at step 0 from the committed base.", ge=1)
    batch_size: int = _f(8, "Image-question items per step.", ge=1)
    learning_rate: float = _f(2.0e-3, "Peak AdamW learning rate (as the grounding pre-training measured).", gt=0)
    warmup: int = _f(200, "Linear warm-up steps.", ge=1)
    vision_lr_scale: float = _f(1.0, "The vision tower and projector train at learning_rate times this. At 1.0 "
                                     "the tower's output norm grew 0.8 -> 395 and the base stopped reading its "
                                     "images; 0.1 kept it at ~2 and the image loss gap grew (600 steps, one "
                                     "seed), not yet shown to make the base point (docs/benchmarks.md). A checkpoint resumes only with the "
                                     "value it started with; change it for a new stretch (--init-from).", gt=0)
    ground_fraction: float = _f(0.5, "Share of a batch's items that are 'Where is the <colour> <shape>?' "
                                     "(answered with the object's SIF area); the rest are short-answer "
                                     "questions (colour, shape, count, existence, nearer, larger, left).",
                                ge=0, le=1)
    copy_every: int = _f(10, "Every this many steps one extra step of text copy pre-training, so the copy "
                             "circuit SFT relies on (copying the question's names) is kept. 0: never.", ge=0)
    copy_init_steps: int = _f(800, "Copy pre-training steps of a fresh run's initial model (the builder's "
                                   "model.tiny.pretrain_steps; 800 taught copying, docs/benchmarks.md).", ge=0)
    corpus_records: int = _f(400, "SIF training records (the recipe's data section, train split) whose "
                                  "prompts and traces, with the pre-training's own texts, train the "
                                  "tokenizer, so SIF traces tokenise compactly in later SFT.", ge=1)
    seed: int = _f(0, "Seed of this stretch's scenes and sampling; a new stretch (--init-from) should take "
                      "a new one so that it sees new scenes.", ge=0)
    checkpoint_minutes: float = _f(5.0, "Minutes between checkpoints (model, optimizer, schedule, step, "
                                        "random states).", gt=0)
    probe_every: int = _f(500, "Steps between held-out probes (logged to MLflow and printed).", ge=1)
    probe_items: int = _f(40, "Held-out items per probe group: per scene size for grounding, per kind for "
                              "short answers.", ge=1)
    log_every: int = _f(50, "Steps between loss lines.", ge=1)
