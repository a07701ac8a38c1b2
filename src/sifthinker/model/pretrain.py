"""Text pre-training of the random tiny LM on copying: a stand-in for what a hub checkpoint already knows.

Qwen2.5-VL-7B arrives pre-trained: it can repeat a phrase it has just read. The tiny model starts from
random weights, and SFT on a few hundred SIF traces never teaches it that: its first ``<text>`` restates a
question of the right kind with the wrong object names (measured: the names copied in 0% of held-out items,
docs/benchmarks.md), so no answer can depend on the question. Copying needs an induction circuit, which a
small LM forms quickly on short sequences made only of copies and slowly, if at all, when the copied
tokens are a few of a 300-token trace. So before the tiny model is saved, it is trained for a few hundred
steps to repeat spans of its tokenizer corpus (the training prompts and traces) in which about half the
words are replaced at random: a sequence is a span, a newline, and the same span again, with the loss on
the repeat. The weights then load through the same code path as any checkpoint; only the tiny builder
calls this.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MIN_WORDS, MAX_WORDS = 4, 16  # span lengths: an object phrase up to a whole question
BATCH_SIZE = 16
LEARNING_RATE = 3e-3  # random init, tiny model: as the local SFT
WARMUP = 30


def _plain(word: str) -> bool:
    """A word a sentence is made of (not a trace's JSON area block, a number or a tag)."""
    return not any(c.isdigit() or c in '[]{}<>"' for c in word)


def copy_spans(texts: Sequence[list[str]], words: Sequence[str], rng: random.Random) -> str:
    """A span of a corpus sentence with about half its words replaced by random corpus words. The repeat of
    an unchanged span can be predicted from the corpus alone (measured: the model learns the prompts by
    heart and copies 4% of the question names); a random replacement only by reading it back. Whole random
    strings teach it too, but several times slower than sentences with random slots."""
    text = rng.choice(texts)
    n = rng.randint(MIN_WORDS, MAX_WORDS)
    start = rng.randint(0, max(0, len(text) - n))
    return " ".join(rng.choice(words) if w.isalpha() and rng.random() < 0.5 else w for w in text[start:start + n])


def make_optimizer(model: PreTrainedModel, lr: float, warmup: int, steps: int,
                   vision_lr_scale: float = 1.0) -> tuple[Any, Any, list[Any]]:
    """The pre-trainings' AdamW over the trainable parameters and its schedule: linear warm-up then linear
    decay to 5% over ``steps`` (a short run must end calm, not at peak rate). ``vision_lr_scale``: the
    vision tower and projector train at ``lr`` times this (VLM recipes give the tower a lower rate; here
    its output norm grew 0.8 -> 395 at 2e-3, docs/benchmarks.md). Returns (optimizer, scheduler,
    parameters); the long base pre-training checkpoints the first two."""
    import torch

    from sifthinker.model.loading import vision_tower

    if vision_lr_scale <= 0:
        raise ValueError(f"vision_lr_scale must be > 0, got {vision_lr_scale}")
    params = [p for p in model.parameters() if p.requires_grad]
    tower = vision_tower(model)
    if vision_lr_scale == 1.0 or tower is None:
        groups: list[dict[str, Any]] = [{"params": params}]
    else:
        seen = {id(p) for p in tower.parameters()}
        groups = [{"params": [p for p in params if id(p) not in seen]},
                  {"params": [p for p in params if id(p) in seen], "lr": lr * vision_lr_scale}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / steps))
    return opt, sched, params


def optimizer_step(model: PreTrainedModel, lr: float, warmup: int, steps: int,
                   optim: tuple[Any, Any, list[Any]] | None = None,
                   vision_lr_scale: float = 1.0) -> Callable[[Any], None]:
    """The pre-trainings' update (:func:`make_optimizer`'s, or ``optim``'s), gradients clipped to norm 1.
    Returns a function that takes one step on a loss."""
    import torch

    opt, sched, params = optim or make_optimizer(model, lr, warmup, steps, vision_lr_scale)

    def step(loss: Any) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    return step


def copy_corpus(corpus: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """The copy task's sentences (plain words of each corpus text) and its word list."""
    texts = [ws for ws in ([w for w in t.split() if _plain(w)] for t in corpus) if ws]
    words = sorted({w for ws in texts for w in ws if w.isalpha()})
    if not words:
        raise ValueError("copy pre-training needs a corpus with words in it")
    return texts, words


def copy_batch(tokenizer: PreTrainedTokenizerBase, texts: Sequence[list[str]], words: Sequence[str],
               rng: random.Random, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """One batch of the copy task: ``span`` newline ``span`` per row, labels on the repeat only."""
    import torch

    pad = tokenizer.pad_token_id
    seqs, labels = [], []
    for _ in range(batch_size):
        span = copy_spans(texts, words, rng)
        first = tokenizer(span + "\n", add_special_tokens=False)["input_ids"]
        again = tokenizer(span, add_special_tokens=False)["input_ids"]
        seqs.append(first + again)
        labels.append([-100] * len(first) + again)
    width = max(map(len, seqs))
    return {"input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
            "labels": torch.tensor([s + [-100] * (width - len(s)) for s in labels])}


def copy_pretrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, corpus: Sequence[str],
                  steps: int, seed: int = 0, log_every: int = 50) -> float:
    """Train ``model`` in place to repeat corpus spans; returns the last step's token accuracy on the repeats."""
    import torch

    texts, words = copy_corpus(corpus)
    rng = random.Random(seed)
    step_fn = optimizer_step(model, LEARNING_RATE, WARMUP, steps)
    model.train()
    accuracy, t0 = 0.0, time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(1, steps + 1):
            batch = copy_batch(tokenizer, texts, words, rng)
            target = batch["labels"]
            out = model(**batch)
            step_fn(out.loss)
            if step % log_every == 0 or step == steps:
                with torch.no_grad():
                    pred, gold = out.logits[:, :-1].argmax(-1), target[:, 1:]
                    scored = gold != -100
                    accuracy = float(((pred == gold) & scored).sum() / scored.sum().clamp(min=1))
                log.info("copy pre-training step %d/%d: loss %.3f, repeat accuracy %.2f (%.0f s)",
                         step, steps, out.loss.item(), accuracy, time.monotonic() - t0)
    model.eval()
    return accuracy
