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


def _join(names: list[str]) -> str:
    uniq = list(dict.fromkeys(names))
    if len(uniq) <= 1:
        return f"the {uniq[0]}" if uniq else "the evidence"
    return "the " + ", the ".join(uniq[:-1]) + f" and the {uniq[-1]}"


class TemplateNarrator:
    """Short, factual step texts: what the focus covers and why the next focus follows."""

    def narrate(self, item: NarrationInput) -> list[str]:
        targets = _join(item.evidence_names)
        texts = []
        for step in item.steps:
            depth = ", ".join(f"{d:g}" for d in step.depths)
            if step.kind == "full":
                texts.append(f"The question asks about {targets}; I look over the whole image.")
            elif step.kind == "distractor":
                texts.append(f"This region does not contain {targets}, so I move my focus.")
            elif step.kind == "merged":
                texts.append(f"This region covers {targets} together.")
            elif step.kind == "expanded":
                texts.append(f"Zooming in around {targets}, at depth about {depth}.")
            elif step.kind == "gt":
                texts.append(self._evidence_text(item, depth))
            else:  # pragma: no cover - FocusStep.kind is a closed Literal
                raise NarrationError(f"unknown step kind {step.kind!r}")
        return texts

    @staticmethod
    def _evidence_text(item: NarrationInput, depth: str) -> str:
        names = item.evidence_names
        if item.category == "counting":
            return f"I count {len(names)} matching object{'s' if len(names) != 1 else ''} here."
        if len(names) == 1:
            return f"Here is the {names[0]}, at depth {depth}; so the answer is {item.answer}."
        return f"Here are {_join(names)}, at depths {depth}; so the answer is {item.answer}."
