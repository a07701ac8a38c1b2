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


def _plural(name: str) -> str:
    """English plural of an object name ("red square" -> "red squares", "box" -> "boxes"); a name that
    already reads as a plural ("framed squares", from a counting question) stays as it is."""
    head, _, last = name.rpartition(" ")
    low = last.lower()
    if low.endswith("s") and not low.endswith(("ss", "us", "is")):
        return name
    if low.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif low.endswith("y") and low[-2:-1] not in ("", *"aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _join(names: list[str]) -> str:
    """The evidence named once each, a repeated name with its count: "the 2 red squares and the blue circle"."""
    counts = dict.fromkeys(names, 0)
    for n in names:
        counts[n] += 1
    parts = [f"the {n}" if c == 1 else f"the {c} {_plural(n)}" for n, c in counts.items()]
    if not parts:
        return "the evidence"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"


def _is_many(names: list[str]) -> bool:
    """Whether the evidence reads as plural: several objects, or one name that is a plural itself."""
    return len(names) != 1 or _plural(names[0]) == names[0]


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
                together = " together" if len(item.evidence_names) > 1 else ""
                texts.append(f"This region covers {targets}{together}.")
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
            return f"Here {'are' if _is_many(names) else 'is'} {_join(names)}: I count {n}; so the answer is {item.answer}."
        if len(names) != len(step.depths):  # evidence merged into fewer boxes: no per-object depth
            depth = ", ".join(_num(d) for d in step.depths)
            return f"Here {'are' if _is_many(names) else 'is'} {_join(names)}, at depth {depth}; " \
                   f"so the answer is {item.answer}."
        located = [f"the {n} at depth {_num(d)}" for n, d in zip(names, step.depths, strict=True)]
        listing = located[0] if len(located) == 1 else ", ".join(located[:-1]) + f" and {located[-1]}"
        return f"Here {'are' if _is_many(names) else 'is'} {listing}; so the answer is {item.answer}."
