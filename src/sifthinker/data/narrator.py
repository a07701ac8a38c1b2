"""Narrators write the text of each trajectory step (spec 2, step 5: forward inference).

`TemplateNarrator` is deterministic and writes from the scene's facts: no model needed, so a local run
and the tests build data offline. A VLM narrator (the paper's method) plugs in through the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sifthinker.data.trajectory import FocusStep


@dataclass(frozen=True)
class NarrationInput:
    question: str
    answer: str
    category: str
    evidence_names: list[str]  # the evidence objects, in the order of the GT boxes
    steps: list[FocusStep]
    facts: dict = field(default_factory=dict)  # optional extra facts from the source


class Narrator(Protocol):
    """Returns one non-empty text per step, or raises `NarrationError` (the item is then rejected)."""

    def narrate(self, item: NarrationInput) -> list[str]: ...


class NarrationError(RuntimeError):
    pass


# A question longer than this, or one holding '<' or '>' (a trace text may not contain tags), is not restated.
MAX_RESTATED_CHARS = 200


def _join(names: list[str]) -> str:
    uniq = list(dict.fromkeys(names))
    if len(uniq) <= 1:
        return f"the {uniq[0]}" if uniq else "the evidence"
    return "the " + ", the ".join(uniq[:-1]) + f" and the {uniq[-1]}"


def _num(d: float) -> str:
    return f"{d:g}"


class TemplateNarrator:
    """Short, factual step texts: what the focus covers and why the next focus follows.

    The first text restates the question word for word. What a model must learn first is to carry the
    question's words into its trace; a verbatim restatement is the easiest form of that copy, and every
    later text names the objects close by, so they are copied from the restatement rather than from the
    prompt far back. (The earlier wording named the *evidence* there, which for counting, attribute and
    "no" existence questions are words the question does not contain: the first text had to be guessed
    from the image before any focus step.) The last text binds each evidence object to its depth and
    ends with the answer, so the answer follows from what the trace has just written.
    """

    def narrate(self, item: NarrationInput) -> list[str]:
        targets = _join(item.evidence_names)
        texts = []
        for step in item.steps:
            depth = ", ".join(_num(d) for d in step.depths)
            if step.kind == "full":
                texts.append(self._opening(item.question, targets))
            elif step.kind == "distractor":
                texts.append(f"This region does not contain {targets}, so I move my focus.")
            elif step.kind == "merged":
                texts.append(f"This region covers {targets} together.")
            elif step.kind == "expanded":
                texts.append(f"Zooming in around {targets}, at depth about {depth}.")
            elif step.kind == "gt":
                texts.append(self._evidence_text(item, step))
            else:  # pragma: no cover - FocusStep.kind is a closed Literal
                raise NarrationError(f"unknown step kind {step.kind!r}")
        return texts

    @staticmethod
    def _opening(question: str, targets: str) -> str:
        q = " ".join(question.split())
        if q and len(q) <= MAX_RESTATED_CHARS and "<" not in q and ">" not in q:
            return f"The question asks: {q} I look over the whole image."
        return f"The question asks about {targets}; I look over the whole image."

    @staticmethod
    def _evidence_text(item: NarrationInput, step: FocusStep) -> str:
        names = item.evidence_names
        if item.category == "counting":
            n = len(names)
            return f"Here {'is' if n == 1 else 'are'} {_join(names)}: I count {n}; so the answer is {item.answer}."
        if len(names) != len(step.depths):  # evidence merged into fewer boxes: no per-object depth
            depth = ", ".join(_num(d) for d in step.depths)
            return f"Here {'is' if len(names) == 1 else 'are'} {_join(names)}, at depth {depth}; " \
                   f"so the answer is {item.answer}."
        located = [f"the {n} at depth {_num(d)}" for n, d in zip(names, step.depths, strict=True)]
        listing = located[0] if len(located) == 1 else ", ".join(located[:-1]) + f" and {located[-1]}"
        return f"Here {'is' if len(names) == 1 else 'are'} {listing}; so the answer is {item.answer}."
